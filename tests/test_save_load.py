"""Saving, loading and sharing: safetensors round trip, tied weights, initialisation of missing tensors,
remote code in a clean interpreter, bf16 and device_map loading."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import ROUTING_MODES, tiny_config
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from modeling_dawn import DawnForCausalLM
from modeling_dawn.configuration_dawn import AUTO_MAP


def _saved_model(tmp_path, **overrides):
    model = DawnForCausalLM(tiny_config(**overrides)).eval()
    with torch.no_grad():
        model.model.router.usage_ema_feature_v.uniform_()  # non-zero statistics must survive the round trip
    model.save_pretrained(tmp_path)
    return model


def test_save_load_round_trip_with_tied_weights_stored_once(tmp_path):
    model = _saved_model(tmp_path, **ROUTING_MODES["cumulative_context"])
    stored = load_file(tmp_path / "model.safetensors")
    assert "model.embed_tokens.weight" in stored and "lm_head.weight" not in stored
    assert not any("layers.0.attention.neurons" in k or "shared" in k for k in stored)  # no per-layer aliases
    assert "model.router.usage_ema_feature_v" in stored
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is DawnForCausalLM
    assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor, rtol=0, atol=0, msg=name)
    ids = torch.randint(0, 61, (2, 6))
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=0)


def test_token_routing_checkpoint_has_no_ssm(tmp_path):
    _saved_model(tmp_path)
    assert not any(k.startswith("model.ssm.") for k in load_file(tmp_path / "model.safetensors"))


def test_missing_tensors_are_initialised_per_spec(tmp_path):
    _saved_model(tmp_path, **ROUTING_MODES["cumulative"])
    path = tmp_path / "model.safetensors"
    stored = load_file(path)
    for name in ("model.neurons.feature_knowledge", "model.ssm.context_scale", "model.router.usage_ema_feature_q"):
        del stored[name]
    save_file(stored, path, metadata={"format": "pt"})
    loaded = DawnForCausalLM.from_pretrained(tmp_path)
    pool = loaded.model.neurons.feature_knowledge  # [N, D, Rk]: each neuron has orthonormal columns
    gram = pool.transpose(1, 2) @ pool
    torch.testing.assert_close(gram, torch.eye(pool.shape[-1]).expand_as(gram), rtol=0, atol=1e-5)
    assert loaded.model.ssm.context_scale.item() == pytest.approx(0.1)
    assert torch.count_nonzero(loaded.model.router.usage_ema_feature_q) == 0


CLEAN_LOAD_SCRIPT = textwrap.dedent(
    """
    import importlib.abc, json, sys
    class Block(importlib.abc.MetaPathFinder):  # the project must not be importable: only the folder's code runs
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("modeling_dawn", "configuration_dawn"):
                raise ImportError(f"blocked {name}")
    sys.meta_path.insert(0, Block())
    import torch
    from transformers import (AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM,
                              AutoModelForSequenceClassification)
    folder = sys.argv[1]
    try:
        import modeling_dawn
        raise SystemExit("project importable")
    except ImportError:
        pass
    ids = torch.tensor(json.loads(sys.argv[2]))
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    out = {"config": type(config).__name__, "module": type(config).__module__}
    for auto in (AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM, AutoModelForSequenceClassification):
        model = auto.from_pretrained(folder, trust_remote_code=True).eval()
        out[auto.__name__] = type(model).__name__
        if auto is AutoModelForCausalLM:
            out["logits"] = model(ids).logits.tolist()
            out["generated"] = model.generate(ids, max_new_tokens=3, do_sample=False).tolist()
    print("RESULT" + json.dumps(out))
    """
)


def test_remote_code_loads_in_a_clean_interpreter_through_all_auto_classes(tmp_path):
    folder = tmp_path / "dawn"
    model = _saved_model(folder, **ROUTING_MODES["mixed"])
    saved = json.loads((folder / "config.json").read_text())
    assert saved["auto_map"] == AUTO_MAP
    for module in ("modeling_dawn.py", "configuration_dawn.py", "routing.py", "decoder_layer.py"):
        assert (folder / module).exists(), module
    ids = torch.randint(0, 61, (1, 5))
    workdir = tmp_path / "empty"
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-I", "-c", CLEAN_LOAD_SCRIPT, str(folder), json.dumps(ids.tolist())],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("RESULT", 1)[1])
    assert result["config"] == "DawnConfig" and result["module"].startswith("transformers_modules")
    assert result["AutoModel"] == "DawnModel"
    assert result["AutoModelForCausalLM"] == "DawnForCausalLM"
    assert result["AutoModelForMaskedLM"] == "DawnForMaskedLM"
    assert result["AutoModelForSequenceClassification"] == "DawnForSequenceClassification"
    torch.testing.assert_close(torch.tensor(result["logits"]), model(ids).logits, rtol=0, atol=1e-5)
    expected = model.generate(ids, max_new_tokens=3, do_sample=False)
    assert result["generated"] == expected.tolist()


def test_bf16_loading_and_forward(tmp_path):
    model = _saved_model(tmp_path, **ROUTING_MODES["cumulative"])
    loaded = DawnForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
    assert loaded.model.neurons.feature_attention.dtype == torch.bfloat16
    ids = torch.randint(0, 61, (2, 6))
    logits = loaded(ids).logits
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()
    # bf16 routing may flip near-ties; most next-token predictions agree with fp32
    agree = (logits.argmax(-1) == model(ids).logits.argmax(-1)).float().mean()
    assert agree >= 0.5


def test_device_map_auto_with_offloaded_layers(tmp_path):
    """accelerate hooks fire through module forwards only: the shared pools must reach the layers anyway."""
    model = _saved_model(tmp_path / "m", **ROUTING_MODES["cumulative_context"])
    device_map = {"model.embed_tokens": "cpu", "model.embed_positions": "cpu", "model.neurons": "disk",
                  "model.router": "disk", "model.ssm": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk",
                  "model.norm": "cpu", "lm_head": "cpu"}
    loaded = DawnForCausalLM.from_pretrained(tmp_path / "m", device_map=device_map,
                                             offload_folder=str(tmp_path / "offload")).eval()
    assert loaded.model.neurons.feature_attention.device.type == "meta"  # really offloaded
    ids = torch.randint(0, 61, (2, 6))
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=1e-6)
    auto = DawnForCausalLM.from_pretrained(tmp_path / "m", device_map="auto").eval()
    torch.testing.assert_close(auto(ids).logits, model(ids).logits, rtol=0, atol=1e-6)
