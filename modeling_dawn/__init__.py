"""DAWN for Hugging Face Transformers. Importing this package registers DAWN with the Auto classes."""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
)

from .cache_dawn import DawnCache
from .configuration_dawn import DAWN_PRESETS, DawnConfig
from .modeling_dawn import (
    DawnForCausalLM,
    DawnForMaskedLM,
    DawnForSequenceClassification,
    DawnModel,
    DawnPreTrainedModel,
)
from .routing import ROUTE_NAMES, RouteTrace

AutoConfig.register("dawn", DawnConfig, exist_ok=True)
AutoModel.register(DawnConfig, DawnModel, exist_ok=True)
AutoModelForCausalLM.register(DawnConfig, DawnForCausalLM, exist_ok=True)
AutoModelForMaskedLM.register(DawnConfig, DawnForMaskedLM, exist_ok=True)
AutoModelForSequenceClassification.register(DawnConfig, DawnForSequenceClassification, exist_ok=True)

__all__ = [
    "DawnConfig", "DAWN_PRESETS", "DawnCache", "DawnPreTrainedModel", "DawnModel", "DawnForCausalLM",
    "DawnForMaskedLM", "DawnForSequenceClassification", "ROUTE_NAMES", "RouteTrace",
]
