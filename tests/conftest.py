import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # reference_dawn
sys.path.insert(0, str(ROOT / "scripts"))  # script modules importable by tests
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import modeling_dawn  # noqa: E402  (registers DAWN with the Auto classes)

ROUTING_MODES = {
    "token": {},
    "cumulative": dict(attention_token_routing=False, knowledge_token_routing=False),
    "cumulative_context": dict(attention_token_routing=False, knowledge_token_routing=False, use_ssm_context=True),
    "mixed": dict(attention_token_routing=True, knowledge_token_routing=False),
}


def tiny_config(vocab_size=61, **overrides):
    """A two-layer DAWN small enough for per-token reference loops."""
    return modeling_dawn.DawnConfig.from_preset("dawn-tiny", vocab_size=vocab_size, **overrides)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
