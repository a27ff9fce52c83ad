"""Research checkpoints (spec §7) -> Hub folder: logits against the slow reference, and every refusal.

The research checkpoints are built here from the key layout of spec §7 with random tensors, and the reference
parameters are named from the spec by a table written independently of scripts/dawn_checkpoint.py's KEY_MAP, so a
wrong entry in the converter's table shows up as a logits mismatch.
"""

import argparse
import json
import os

import pytest
import torch
import yaml
from conftest import import_script
from reference_dawn import reference_logits

from modeling_dawn import DawnForCausalLM

convert = import_script("convert_original_checkpoint")
dc = import_script("dawn_checkpoint")

TINY = dict(
    vocab_size=53, d_model=32, n_layers=2, n_heads=2, rank=8, knowledge_rank=8, max_seq_len=16, state_dim=4,
    d_space=16, n_feature_qk=6, n_feature_v=10, n_restore_qk=6, n_restore_v=10, n_feature_know=8, n_restore_know=8,
    top_k_feature_qk=2, top_k_feature_v=3, top_k_restore_qk=2, top_k_restore_v=3, top_k_feature_know=3,
    top_k_restore_know=3, dropout=0.1, router_dropout=0.1,
)
MODES = {
    "token": dict(attention_token_routing=True, knowledge_token_routing=True, use_ssm_context=False),
    "cumulative": dict(attention_token_routing=False, knowledge_token_routing=False, use_ssm_context=True),
}


def research_state_dict(c=TINY, seed=0):
    """A research v17.1 state dict (spec §7 key layout, aliases included) with random tensors."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=1.0):
        return torch.randn(*shape, generator=g) * scale

    D, R, Rk, Ds, Ns, L = c["d_model"], c["rank"], c["knowledge_rank"], c["d_space"], c["state_dim"], c["n_layers"]
    nf, nr = c["n_feature_qk"] + c["n_feature_v"], c["n_restore_qk"] + c["n_restore_v"]
    total = nf + nr + c["n_feature_know"] + c["n_restore_know"]
    sd = {
        "token_emb.weight": rnd(c["vocab_size"], D, scale=0.5),
        "pos_emb.weight": rnd(c["max_seq_len"], D, scale=0.1),
        "norm.weight": 1 + rnd(D, scale=0.1), "norm.bias": rnd(D, scale=0.1),
        "global_ssm.A_log": rnd(D, Ns, scale=0.1), "global_ssm.context_scale": torch.tensor(0.3),
        "global_ssm.W_delta.weight": rnd(D, D, scale=0.1), "global_ssm.W_B.weight": rnd(Ns, D, scale=0.2),
        "global_ssm.W_C.weight": rnd(Ns, D, scale=0.2), "global_ssm.ssm_norm.weight": 1 + rnd(D, scale=0.1),
        "global_ssm.ssm_norm.bias": rnd(D, scale=0.1), "global_ssm.context_proj.weight": rnd(D, D, scale=0.2),
        "global_ssm.importance_proj.weight": rnd(D, D, scale=0.05),
        "shared_neurons.f_neurons": rnd(nf, D, R, scale=D ** -0.5),
        "shared_neurons.r_neurons": rnd(nr, R, D, scale=R ** -0.5),
        "shared_neurons.feature_know": rnd(c["n_feature_know"], D, Rk, scale=D ** -0.5),
        "shared_neurons.restore_know": rnd(c["n_restore_know"], Rk, D, scale=Rk ** -0.5),
        "router.neuron_router.neuron_emb": rnd(total, Ds),
        "router.neuron_router.proj_all.weight": rnd(6 * Ds, D, scale=0.5),
        "router.neuron_router.proj_all.bias": rnd(6 * Ds, scale=0.1),
        "router.neuron_router.proj_feature_know.weight": rnd(Ds, D, scale=0.5),
        "router.neuron_router.proj_feature_know.bias": rnd(Ds, scale=0.1),
        "router.neuron_router.proj_restore_know.weight": rnd(Ds, D, scale=0.5),
        "router.neuron_router.proj_restore_know.bias": rnd(Ds, scale=0.1),
    }
    for route, pool in (("feature_q", "qk"), ("feature_k", "qk"), ("feature_v", "v"), ("restore_q", "qk"),
                        ("restore_k", "qk"), ("restore_v", "v"), ("feature_know", "know"), ("restore_know", "know")):
        n = c[f"n_{route.split('_')[0]}_{pool}"]
        sd[f"router.neuron_router.usage_ema_{route}"] = torch.rand(n, generator=g)
    for i in range(L):
        for norm in ("norm1", "norm2"):
            sd[f"layers.{i}.{norm}.weight"] = 1 + rnd(D, scale=0.1)
            sd[f"layers.{i}.{norm}.bias"] = rnd(D, scale=0.1)
        sd[f"layers.{i}.attn.expand_O.weight"] = rnd(D, D, scale=D ** -0.5)
        for circuit in ("attn", "knowledge"):  # aliases: the very same tensors
            for pool in ("f_neurons", "r_neurons", "feature_know", "restore_know"):
                sd[f"layers.{i}.{circuit}.shared_neurons.{pool}"] = sd[f"shared_neurons.{pool}"]
    sd["lm_head.weight"] = sd["token_emb.weight"]
    return sd


def reference_params(rsd, n_layers, with_ssm):
    """Our names for the research tensors, written out from the spec (independently of KEY_MAP)."""
    p = {
        "model.embed_tokens.weight": rsd["token_emb.weight"], "model.embed_positions.weight": rsd["pos_emb.weight"],
        "model.norm.weight": rsd["norm.weight"], "model.norm.bias": rsd["norm.bias"],
        "model.neurons.feature_attention": rsd["shared_neurons.f_neurons"],
        "model.neurons.restore_attention": rsd["shared_neurons.r_neurons"],
        "model.neurons.feature_knowledge": rsd["shared_neurons.feature_know"],
        "model.neurons.restore_knowledge": rsd["shared_neurons.restore_know"],
        "model.router.neuron_embeddings": rsd["router.neuron_router.neuron_emb"],
        "model.router.attention_proj.weight": rsd["router.neuron_router.proj_all.weight"],
        "model.router.attention_proj.bias": rsd["router.neuron_router.proj_all.bias"],
        "model.router.feature_know_proj.weight": rsd["router.neuron_router.proj_feature_know.weight"],
        "model.router.feature_know_proj.bias": rsd["router.neuron_router.proj_feature_know.bias"],
        "model.router.restore_know_proj.weight": rsd["router.neuron_router.proj_restore_know.weight"],
        "model.router.restore_know_proj.bias": rsd["router.neuron_router.proj_restore_know.bias"],
    }
    for i in range(n_layers):
        p[f"model.layers.{i}.attention_norm.weight"] = rsd[f"layers.{i}.norm1.weight"]
        p[f"model.layers.{i}.attention_norm.bias"] = rsd[f"layers.{i}.norm1.bias"]
        p[f"model.layers.{i}.knowledge_norm.weight"] = rsd[f"layers.{i}.norm2.weight"]
        p[f"model.layers.{i}.knowledge_norm.bias"] = rsd[f"layers.{i}.norm2.bias"]
        p[f"model.layers.{i}.attention.o_proj.weight"] = rsd[f"layers.{i}.attn.expand_O.weight"]
    if with_ssm:
        for ours, theirs in (("A_log", "A_log"), ("context_scale", "context_scale"),
                             ("delta_proj.weight", "W_delta.weight"), ("B_proj.weight", "W_B.weight"),
                             ("C_proj.weight", "W_C.weight"), ("norm.weight", "ssm_norm.weight"),
                             ("norm.bias", "ssm_norm.bias"), ("context_proj.weight", "context_proj.weight"),
                             ("importance_proj.weight", "importance_proj.weight")):
            p[f"model.ssm.{ours}"] = rsd[f"global_ssm.{theirs}"]
    return p


def write_checkpoint(path, fmt, mode, sd=None, config=None):
    """fmt 'plain': the state dict alone; 'wrapped' / 'wrapped_model_config': model_state_dict with _orig_mod.
    prefixes and the constructor keywords under 'config' / 'model_config'."""
    sd = research_state_dict() if sd is None else sd
    config = {**TINY, **MODES[mode]} if config is None else config
    if fmt == "plain":
        torch.save(sd, path)
    else:
        key = "config" if fmt == "wrapped" else "model_config"
        torch.save({"model_state_dict": {f"_orig_mod.{k}": v for k, v in sd.items()}, key: config,
                    "step": 1000, "optimizer_state_dict": {}}, path)
    return path


def assert_nothing_left(tmp_path, output):
    assert not output.exists() or not any(output.iterdir()), f"{output} was left behind"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".") or "tmp" in p.name]
    assert not leftovers, leftovers


@pytest.mark.parametrize("fmt,mode,config_kind", [
    ("plain", "token", "json"),
    ("plain", "cumulative", "yaml"),
    ("wrapped", "token", None),
    ("wrapped_model_config", "cumulative", None),
])
def test_converted_logits_match_the_reference(tmp_path, capsys, fmt, mode, config_kind):
    rsd = research_state_dict()
    ckpt = write_checkpoint(tmp_path / "ckpt.pt", fmt, mode, sd=rsd)
    config_file = None
    if config_kind == "json":
        config_file = tmp_path / "config.json"
        config_file.write_text(json.dumps({**TINY, **MODES[mode]}))
    elif config_kind == "yaml":  # the research training YAML: constructor keywords under model:
        config_file = tmp_path / "train.yaml"
        config_file.write_text(yaml.safe_dump({"seed": 1, "model": {"model_version": "17.1", **TINY, **MODES[mode]},
                                               "training": {"lr": 6.5e-4}}))
    out = tmp_path / "hub"
    convert.convert_checkpoint(ckpt, out, config_file=config_file)
    printed = capsys.readouterr().out
    assert ("dropped the SSM" in printed) == (mode == "token")

    assert not list(out.glob("*.bin")) and (out / "model.safetensors").exists()
    model = DawnForCausalLM.from_pretrained(out).double().eval()
    cfg = model.config
    for key, value in MODES[mode].items():
        assert getattr(cfg, key) is value
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.attention_rank, cfg.router_dim) == (32, 2, 8, 16)
    assert (model.model.ssm is None) == (mode == "token")
    # usage statistics are kept
    for route, usage in model.model.router.usage().items():
        torch.testing.assert_close(usage.float(), rsd[f"router.neuron_router.usage_ema_{route}"])

    params = {k: v.double() for k, v in reference_params(rsd, 2, with_ssm=(mode != "token")).items()}
    ours = model.state_dict()
    for name, tensor in params.items():
        assert torch.equal(ours[name], tensor), name
    ids = torch.randint(0, TINY["vocab_size"], (2, 7), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, :2] = 0  # left padding in the second row
    with torch.no_grad():
        logits = model(ids, attention_mask=mask).logits
    ref = reference_logits(params, cfg, ids, attention_mask=mask)
    valid = mask.bool()
    # the SSM scan runs in fp32 even in an fp64 model (as in tests/test_modeling.py: atol 1e-5)
    torch.testing.assert_close(logits[valid], ref[valid], rtol=0, atol=1e-5)


def test_auto_class_loads_the_converted_folder(tmp_path):
    ckpt = write_checkpoint(tmp_path / "ckpt.pt", "wrapped", "token")
    out = convert.convert_checkpoint(ckpt, tmp_path / "hub", log=lambda *_: None)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)
    assert type(model).__name__ == "DawnForCausalLM"
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    saved = json.loads((out / "config.json").read_text())
    assert saved["attention_token_routing"] is True and saved["use_ssm_context"] is False
    assert (out / "README.md").exists() and (out / "generation_config.json").exists()


def test_sizes_are_inferred_from_shapes_when_unambiguous(tmp_path, capsys):
    ckpt = write_checkpoint(tmp_path / "ckpt.pt", "plain", "cumulative")
    needed = {k: TINY[k] for k in dc.NOT_INFERABLE}  # n_heads and the top-k values
    config_file = tmp_path / "c.json"
    config_file.write_text(json.dumps({**needed, **MODES["cumulative"]}))
    out = convert.convert_checkpoint(ckpt, tmp_path / "hub", config_file=config_file)
    assert "inferred from tensor shapes" in capsys.readouterr().out
    cfg = DawnForCausalLM.from_pretrained(out).config
    assert (cfg.vocab_size, cfg.hidden_size, cfg.num_hidden_layers, cfg.max_position_embeddings) == (53, 32, 2, 16)
    assert (cfg.n_feature_qk, cfg.n_feature_v, cfg.n_restore_qk, cfg.n_restore_v) == (6, 10, 6, 10)
    assert (cfg.state_dim, cfg.knowledge_rank, cfg.router_dim) == (4, 8, 16)


def test_key_map_is_one_to_one_onto_our_state_dict():
    cfg = dc.build_dawn_config({**TINY, **MODES["cumulative"]})
    ours = set(DawnForCausalLM(cfg).state_dict()) - {"lm_head.weight"}
    mapped = [dc.research_to_ours(k) for k in research_state_dict() if dc.alias_target(k) is None]
    assert len(mapped) == len(set(mapped)) and set(mapped) == ours
    assert dc.alias_target("layers.1.knowledge.shared_neurons.r_neurons") == "shared_neurons.r_neurons"
    assert dc.research_to_ours("layers.1.attn.shared_neurons.r_neurons") is None


# ------------------------------------------------------------------------------------------------ refusals

def _refused(tmp_path, sd=None, config=None, config_file=None, fmt="wrapped", mode="token"):
    ckpt = write_checkpoint(tmp_path / "ckpt.pt", fmt, mode, sd=sd, config=config)
    out = tmp_path / "hub"
    with pytest.raises(dc.CheckpointError) as err:
        convert.convert_checkpoint(ckpt, out, config_file=config_file, log=lambda *_: None)
    assert_nothing_left(tmp_path, out)
    return str(err.value)


def test_refuses_missing_tensors(tmp_path):
    sd = research_state_dict()
    del sd["layers.1.norm2.bias"], sd["router.neuron_router.usage_ema_restore_k"]
    msg = _refused(tmp_path, sd=sd)
    assert "missing tensors" in msg and "layers.1.norm2.bias" in msg and "usage_ema_restore_k" in msg


def test_refuses_missing_ssm_for_cumulative_routing(tmp_path):
    sd = {k: v for k, v in research_state_dict().items() if not k.startswith("global_ssm.")}
    msg = _refused(tmp_path, sd=sd, mode="cumulative")
    assert "global_ssm.A_log" in msg and "global_ssm.importance_proj.weight" in msg


def test_refuses_unexpected_tensors(tmp_path):
    sd = research_state_dict()
    sd["layers.0.attn.expand_Q.weight"] = torch.zeros(32, 32)
    sd["layers.2.norm1.weight"] = torch.ones(32)  # a layer beyond n_layers=2
    msg = _refused(tmp_path, sd=sd)
    assert "unexpected tensors" in msg and "layers.0.attn.expand_Q.weight" in msg and "layers.2.norm1.weight" in msg


def test_refuses_mis_shaped_tensors(tmp_path):
    sd = research_state_dict()
    sd["layers.0.attn.expand_O.weight"] = torch.zeros(32, 31)
    sd["router.neuron_router.proj_all.bias"] = torch.zeros(95)
    msg = _refused(tmp_path, sd=sd)
    assert "mis-shaped" in msg and "layers.0.attn.expand_O.weight has shape [32, 31], expected [32, 32]" in msg
    assert "router.neuron_router.proj_all.bias" in msg


def test_refuses_alias_that_differs(tmp_path):
    sd = research_state_dict()
    sd["layers.1.knowledge.shared_neurons.feature_know"] = sd["shared_neurons.feature_know"] + 1
    sd["lm_head.weight"] = sd["token_emb.weight"].clone() * 2
    msg = _refused(tmp_path, sd=sd)
    assert "layers.1.knowledge.shared_neurons.feature_know" in msg and "lm_head.weight" in msg


def test_refuses_non_finite_values(tmp_path):
    sd = research_state_dict()
    sd["norm.bias"] = sd["norm.bias"].clone()
    sd["norm.bias"][0] = float("nan")
    assert "norm.bias" in _refused(tmp_path, sd=sd)


@pytest.mark.parametrize("flag", dc.ROUTING_FLAGS)
def test_refuses_missing_routing_flags(tmp_path, flag):
    config = {**TINY, **MODES["token"]}
    del config[flag]
    msg = _refused(tmp_path, config=config)
    assert flag in msg and "routing flags" in msg


def test_refuses_plain_state_dict_without_config(tmp_path):
    msg = _refused(tmp_path, fmt="plain")
    assert all(flag in msg for flag in dc.ROUTING_FLAGS)


def test_refuses_sizes_that_cannot_be_inferred(tmp_path):
    config = {**TINY, **MODES["token"]}
    del config["n_heads"], config["top_k_feature_v"]
    msg = _refused(tmp_path, config=config)
    assert "n_heads" in msg and "top_k_feature_v" in msg and "not recoverable" in msg


def test_refuses_conflicting_configs_and_unknown_keys_and_versions(tmp_path):
    config_file = tmp_path / "c.json"
    config_file.write_text(json.dumps({"n_heads": 4}))
    assert "conflict for 'n_heads'" in _refused(tmp_path, config_file=config_file)
    config_file.write_text(json.dumps({"n_head": 2}))
    assert "unknown research config keys: n_head" in _refused(tmp_path, config_file=config_file)
    assert "model_version" in _refused(tmp_path, config={**TINY, **MODES["token"], "model_version": "18.5"})


def test_refuses_pickled_objects(tmp_path):
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"model_state_dict": research_state_dict(), "config": {**TINY, **MODES["token"]},
                "args": argparse.Namespace(lr=1.0)}, ckpt)
    out = tmp_path / "hub"
    with pytest.raises(dc.CheckpointError, match="weights_only=True"):
        convert.convert_checkpoint(ckpt, out)
    assert_nothing_left(tmp_path, out)


def test_failure_while_writing_leaves_nothing(tmp_path, monkeypatch):
    export_hub_folder = import_script("export_hub_folder")  # the module convert_original_checkpoint uses

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(export_hub_folder, "build_model_card", boom)
    ckpt = write_checkpoint(tmp_path / "ckpt.pt", "wrapped", "token")
    out = tmp_path / "hub"
    out.mkdir()  # an existing empty folder stays empty
    with pytest.raises(RuntimeError, match="disk full"):
        convert.convert_checkpoint(ckpt, out, log=lambda *_: None)
    assert out.exists() and not any(out.iterdir())
    assert_nothing_left(tmp_path, out)


def test_refuses_non_empty_output(tmp_path):
    ckpt = write_checkpoint(tmp_path / "ckpt.pt", "wrapped", "token")
    out = tmp_path / "hub"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(dc.CheckpointError, match="not empty"):
        convert.convert_checkpoint(ckpt, out)
    assert os.listdir(out) == ["keep.txt"]


def test_command_line_reports_errors_in_one_line(tmp_path, capsys):
    ckpt = write_checkpoint(tmp_path / "ckpt.pt", "plain", "token")
    rc = convert.main(["--checkpoint", str(ckpt), "--output", str(tmp_path / "hub")])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("error: ") and "attention_token_routing" in err
    assert not (tmp_path / "hub").exists()
