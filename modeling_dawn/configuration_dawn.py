"""DawnConfig: the configuration of a DAWN model (DAWN v17.1, spec §1).

Defaults are the published DAWN-39M with token routing in both circuits. Fields use Transformers-standard
names (`hidden_size`, `num_hidden_layers`, ...) and the constructor also accepts every keyword of the research
constructor (`d_model`, `n_layers`, `rank`, `d_space`, `dropout`, ...), so `DawnConfig(**research_config)`
works. Invalid values raise `ValueError` naming the field and the value.
"""

import difflib
import math

from transformers import PreTrainedConfig
from transformers.utils import logging

logger = logging.get_logger(__name__)

# research keyword -> field name. Keywords that are already field names (n_feature_qk, top_k_feature_qk, ...)
# need no entry.
RESEARCH_ALIASES = {
    "d_model": "hidden_size",
    "n_layers": "num_hidden_layers",
    "n_heads": "num_attention_heads",
    "max_seq_len": "max_position_embeddings",
    "rank": "attention_rank",
    "d_space": "router_dim",
    "dropout": "hidden_dropout",
}

POOL_SIZE_FIELDS = (
    "n_feature_qk", "n_feature_v", "n_restore_qk", "n_restore_v", "n_feature_know", "n_restore_know",
)
# top-k field -> the pool size it selects from
TOP_K_FIELDS = {
    "top_k_feature_qk": "n_feature_qk",
    "top_k_feature_v": "n_feature_v",
    "top_k_restore_qk": "n_restore_qk",
    "top_k_restore_v": "n_restore_v",
    "top_k_feature_know": "n_feature_know",
    "top_k_restore_know": "n_restore_know",
}

AUTO_MAP = {
    "AutoConfig": "configuration_dawn.DawnConfig",
    "AutoModel": "modeling_dawn.DawnModel",
    "AutoModelForCausalLM": "modeling_dawn.DawnForCausalLM",
    "AutoModelForMaskedLM": "modeling_dawn.DawnForMaskedLM",
    "AutoModelForSequenceClassification": "modeling_dawn.DawnForSequenceClassification",
}

DAWN_PRESETS = {
    # The published model (spec §1): 39,247,105 parameters with the SSM, 38,730,240 without.
    "dawn-39m": {},
    # A few-hundred-thousand-parameter model for tests and CPU demos.
    "dawn-tiny": dict(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=128,
        attention_rank=16, knowledge_rank=16, router_dim=32, state_dim=8,
        n_feature_qk=8, n_feature_v=16, n_restore_qk=8, n_restore_v=16, n_feature_know=12, n_restore_know=12,
        top_k_feature_qk=3, top_k_feature_v=4, top_k_restore_qk=3, top_k_restore_v=4,
        top_k_feature_know=3, top_k_restore_know=3,
    ),
    # 2.63M parameters without embeddings (4.26M with an 8192-token vocabulary): trains in minutes on a CPU.
    "dawn-small": dict(
        hidden_size=192, num_hidden_layers=4, num_attention_heads=4, max_position_embeddings=256,
        attention_rank=32, knowledge_rank=32, router_dim=64, state_dim=16,
        n_feature_qk=32, n_feature_v=96, n_restore_qk=32, n_restore_v=96, n_feature_know=64, n_restore_know=64,
        top_k_feature_qk=8, top_k_feature_v=8, top_k_restore_qk=8, top_k_restore_v=8,
        top_k_feature_know=8, top_k_restore_know=8,
    ),
}


class DawnConfig(PreTrainedConfig):
    r"""
    Configuration of a DAWN model. Field names of the research code are accepted as aliases
    (see `RESEARCH_ALIASES`); a `DawnConfig` built from a research config dict computes the same function.

    Routing: `attention_token_routing` / `knowledge_token_routing` pick, per circuit, between token routing (each
    token routes on its own preferences; the published mode) and cumulative routing (each position routes on the
    importance-weighted running average of the preferences of positions <= t, with importance scores from a
    selective SSM run once over the embeddings). The SSM exists only if a circuit uses cumulative routing.

    Example:
    ```python
    >>> from modeling_dawn import DawnConfig, DawnForCausalLM
    >>> config = DawnConfig.from_preset("dawn-39m")
    >>> model = DawnForCausalLM(config)
    ```
    """

    model_type = "dawn"
    _auto_class = "AutoConfig"
    keys_to_ignore_at_inference = ["cache"]

    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 12
    num_attention_heads: int = 6
    max_position_embeddings: int = 512
    attention_rank: int = 64
    knowledge_rank: int = 64
    router_dim: int = 256
    state_dim: int = 64
    n_feature_qk: int = 64
    n_feature_v: int = 264
    n_restore_qk: int = 64
    n_restore_v: int = 264
    n_feature_know: int = 160
    n_restore_know: int = 160
    top_k_feature_qk: int = 12
    top_k_feature_v: int = 12
    top_k_restore_qk: int = 12
    top_k_restore_v: int = 12
    top_k_feature_know: int = 12
    top_k_restore_know: int = 12
    hidden_dropout: float = 0.1
    attention_dropout: float | None = None  # None: same as hidden_dropout (the research code uses one rate)
    router_dropout: float = 0.1
    attention_token_routing: bool = True
    knowledge_token_routing: bool = True
    use_ssm_context: bool = False
    importance_temperature: float = 0.5
    context_scale_init: float = 0.1
    layer_norm_eps: float = 1e-5
    initializer_range: float = 0.02
    ssm_a_log_init_std: float = 0.1
    load_balance_coef: float = 2e-5
    orthogonality_coef: float = 0.01
    knowledge_diversity_coef: float = 0.1
    # Not in the paper (its load balance covers the six attention routes only): the same term over the two
    # knowledge routes, whose choices collapse onto a few neurons at small scale (docs/training.md).
    knowledge_load_balance_coef: float = 0.0
    usage_ema_decay: float = 0.99
    neuron_composition: str = "sparse"  # "sparse" (only the chosen neurons) or "dense" (research-style reference)
    output_router_logits: bool = False
    use_cache: bool = True
    tie_word_embeddings: bool = True
    pad_token_id: int | None = 0
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None

    def __post_init__(self, **kwargs):
        for alias, field in RESEARCH_ALIASES.items():
            if alias in kwargs:
                value = kwargs.pop(alias)
                default = type(self).__dataclass_fields__[field].default
                current = getattr(self, field)
                if current != default and current != value:
                    raise ValueError(
                        f"DawnConfig got both {field}={current!r} and its research alias {alias}={value!r}"
                    )
                setattr(self, field, value)
        if kwargs.pop("gradient_checkpointing", False):
            logger.warning(
                "DawnConfig(gradient_checkpointing=True) is a research-code training flag; "
                "call model.activation_checkpointing_enable() (or pass --activation_checkpointing to Trainer; "
                "gradient_checkpointing_enable() / --gradient_checkpointing on transformers before the rename)."
            )
        self._refuse_typos(kwargs)
        if self.attention_dropout is None:
            self.attention_dropout = self.hidden_dropout
        super().__post_init__(**kwargs)
        if getattr(self, "auto_map", None) is None:
            # saved folders load through every Auto class with trust_remote_code=True
            self.auto_map = dict(AUTO_MAP)
        self.validate_dawn()

    # ------------------------------------------------------------------ presets

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "DawnConfig":
        """A named preset (`dawn-39m`, `dawn-tiny`, `dawn-small`) with optional field overrides."""
        if name not in DAWN_PRESETS:
            raise ValueError(f"Unknown DAWN preset {name!r}; known presets: {sorted(DAWN_PRESETS)}")
        return cls(**{**DAWN_PRESETS[name], **overrides})

    # ------------------------------------------------------------------ validation

    @classmethod
    def _known_names(cls) -> set:
        return set(cls.__dataclass_fields__) | set(RESEARCH_ALIASES)

    @classmethod
    def _refuse_typos(cls, kwargs: dict) -> None:
        """Unknown keys that look like a misspelt DAWN field are an error (others are kept, as Transformers does)."""
        dawn_names = [n for n in cls._known_names() if n in cls.__annotations__ or n in RESEARCH_ALIASES]
        for key, value in kwargs.items():
            if key.startswith("_"):
                continue
            close = difflib.get_close_matches(key, dawn_names, n=1, cutoff=0.8)
            if close:
                raise ValueError(f"Unknown DawnConfig field {key}={value!r}; did you mean {close[0]!r}?")

    def validate_dawn(self) -> None:
        """Raise `ValueError` naming the first invalid field and its value."""

        def positive_int(name):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"DawnConfig.{name} must be a positive integer, got {value!r}")

        for name in (
            "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "max_position_embeddings",
            "attention_rank", "knowledge_rank", "router_dim", "state_dim", *POOL_SIZE_FIELDS,
        ):
            positive_int(name)
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"DawnConfig.hidden_size={self.hidden_size} is not divisible by "
                f"num_attention_heads={self.num_attention_heads}"
            )
        for k_name, pool_name in TOP_K_FIELDS.items():
            k, n = getattr(self, k_name), getattr(self, pool_name)
            if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
                raise ValueError(f"DawnConfig.{k_name}={k!r} must be an integer in [1, {pool_name}={n}]")
        for name in ("hidden_dropout", "attention_dropout", "router_dropout"):
            p = getattr(self, name)
            if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
                raise ValueError(f"DawnConfig.{name}={p!r} must be in [0, 1)")
        for name in ("load_balance_coef", "orthogonality_coef", "knowledge_diversity_coef",
                     "knowledge_load_balance_coef"):
            c = getattr(self, name)
            if not isinstance(c, (int, float)) or not math.isfinite(c) or c < 0:
                raise ValueError(f"DawnConfig.{name}={c!r} must be a finite number >= 0")
        if not 0.0 <= self.usage_ema_decay < 1.0:
            raise ValueError(f"DawnConfig.usage_ema_decay={self.usage_ema_decay!r} must be in [0, 1)")
        for name in ("importance_temperature", "layer_norm_eps", "initializer_range"):
            if not getattr(self, name) > 0:
                raise ValueError(f"DawnConfig.{name}={getattr(self, name)!r} must be > 0")
        for name in ("attention_token_routing", "knowledge_token_routing", "use_ssm_context"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"DawnConfig.{name}={getattr(self, name)!r} must be True or False")
        if self.neuron_composition not in ("sparse", "dense"):
            raise ValueError(
                f"DawnConfig.neuron_composition={self.neuron_composition!r} must be 'sparse' or 'dense'"
            )
        if self.use_ssm_context and not self.uses_ssm:
            raise ValueError(
                "DawnConfig.use_ssm_context=True needs a circuit with cumulative routing "
                "(attention_token_routing=False or knowledge_token_routing=False); with token routing the SSM "
                "does not exist"
            )

    # ------------------------------------------------------------------ derived sizes

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def uses_ssm(self) -> bool:
        """The SSM exists only when a circuit uses cumulative routing."""
        return not (self.attention_token_routing and self.knowledge_token_routing)

    @property
    def total_neurons(self) -> int:
        return sum(getattr(self, name) for name in POOL_SIZE_FIELDS)

    def to_research_kwargs(self) -> dict:
        """The research constructor's keywords for this config (for comparisons with the research code)."""
        out = {alias: getattr(self, field) for alias, field in RESEARCH_ALIASES.items()}
        for name in (
            "vocab_size", "knowledge_rank", "state_dim", "router_dropout", "attention_token_routing",
            "knowledge_token_routing", "use_ssm_context", *POOL_SIZE_FIELDS, *TOP_K_FIELDS,
        ):
            out[name] = getattr(self, name)
        return out


__all__ = ["DawnConfig", "DAWN_PRESETS", "RESEARCH_ALIASES"]
