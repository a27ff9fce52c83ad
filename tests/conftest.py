import importlib.abc
import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
sys.path.insert(0, str(Path(__file__).resolve().parent))  # reference_dawn
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import modeling_dawn  # noqa: E402  (registers DAWN with the Auto classes)

# scripts/ is never put on sys.path: it holds evaluate.py, which would shadow the `evaluate` package for the whole
# session. Script modules are imported by path instead, under their own names (so `convert_original_checkpoint`
# and the tests share one `export_hub_folder` module) except evaluate.py, which gets a name of its own.
SCRIPT_MODULE_NAMES = {"evaluate": "dawn_evaluate_script"}


def _script_spec(name):
    return importlib.util.spec_from_file_location(SCRIPT_MODULE_NAMES.get(name, name), SCRIPTS / f"{name}.py")


def import_script(name):
    """scripts/<name>.py as a module (scripts/evaluate.py as `dawn_evaluate_script`), imported once per session."""
    module_name = SCRIPT_MODULE_NAMES.get(name, name)
    if module_name not in sys.modules:
        if not (SCRIPTS / f"{name}.py").is_file():
            raise ModuleNotFoundError(f"no script scripts/{name}.py")
        spec = _script_spec(name)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[module_name]
            raise
    return sys.modules[module_name]


class _SiblingScriptFinder(importlib.abc.MetaPathFinder):
    """Resolves the scripts' imports of each other (`import dawn_data`, `from train import ...`), which work from the
    command line because Python puts a script's folder first on sys.path. Last on sys.meta_path and never for
    `evaluate`: it only answers for names that nothing installed provides."""

    def find_spec(self, fullname, path=None, target=None):
        if path is None and fullname not in SCRIPT_MODULE_NAMES and (SCRIPTS / f"{fullname}.py").is_file():
            return _script_spec(fullname)
        return None


if not any(type(f).__name__ == "_SiblingScriptFinder" for f in sys.meta_path):  # conftest imported twice
    sys.meta_path.append(_SiblingScriptFinder())

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
