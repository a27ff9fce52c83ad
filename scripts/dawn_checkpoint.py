"""Research DAWN v17.1 checkpoints -> this project's DawnForCausalLM weights (spec §7).

Imported by convert_original_checkpoint.py (the command line) and by the tests (by path, see tests/conftest.py).

What a research checkpoint holds: a `torch.save` of a plain state dict, or of a dict with `model_state_dict`
(keys possibly prefixed `_orig_mod.` by torch.compile) and a `config` / `model_config` dict of research
constructor keywords (`d_model`, `n_layers`, `rank`, `d_space`, ...). A training YAML's `model:` section holds
the same keywords (plus `model_version`).

Conversion rules:
* every research tensor maps one to one onto one of our names (`KEY_MAP` below); nothing is reshaped,
  transposed or split;
* alias keys are dropped: `layers.{i}.attn.shared_neurons.*` and `layers.{i}.knowledge.shared_neurons.*` (the
  same tensors as `shared_neurons.*`) and `lm_head.weight` (tied to `token_emb.weight`). They are optional, but
  when present they must equal the tensor they alias, else the checkpoint is refused;
* the router's usage statistics (`usage_ema_*` buffers) are kept;
* the SSM (`global_ssm.*`) exists in every research checkpoint but only runs under cumulative routing; for a
  token-routing config it was never trained and is dropped (with a printed note);
* the routing flags (`attention_token_routing`, `knowledge_token_routing`, `use_ssm_context`) must come from a
  config: they are not in the state dict, and the research constructor's defaults compute another function;
* sizes missing from the config are inferred from tensor shapes only where one tensor fixes them unambiguously
  (see `INFERABLE_SIZES`); `n_heads` and the top-k values cannot be inferred and are an error when missing;
* missing, unexpected, mis-shaped or non-finite tensors are refused with a `CheckpointError` naming each.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch

# ----------------------------------------------------------------------------------------------------------------
# The key map (research name -> our DawnForCausalLM.state_dict() name). `{i}` is a layer index.
# ----------------------------------------------------------------------------------------------------------------

KEY_MAP = {
    # embeddings and final norm
    "token_emb.weight":                                 "model.embed_tokens.weight",
    "pos_emb.weight":                                   "model.embed_positions.weight",
    "norm.weight":                                      "model.norm.weight",
    "norm.bias":                                        "model.norm.bias",
    # the four neuron pools shared by all layers
    "shared_neurons.f_neurons":                         "model.neurons.feature_attention",
    "shared_neurons.r_neurons":                         "model.neurons.restore_attention",
    "shared_neurons.feature_know":                      "model.neurons.feature_knowledge",
    "shared_neurons.restore_know":                      "model.neurons.restore_knowledge",
    # the router
    "router.neuron_router.neuron_emb":                  "model.router.neuron_embeddings",
    "router.neuron_router.proj_all.weight":             "model.router.attention_proj.weight",
    "router.neuron_router.proj_all.bias":               "model.router.attention_proj.bias",
    "router.neuron_router.proj_feature_know.weight":    "model.router.feature_know_proj.weight",
    "router.neuron_router.proj_feature_know.bias":      "model.router.feature_know_proj.bias",
    "router.neuron_router.proj_restore_know.weight":    "model.router.restore_know_proj.weight",
    "router.neuron_router.proj_restore_know.bias":      "model.router.restore_know_proj.bias",
    # the router's usage statistics (buffers)
    "router.neuron_router.usage_ema_feature_q":         "model.router.usage_ema_feature_q",
    "router.neuron_router.usage_ema_feature_k":         "model.router.usage_ema_feature_k",
    "router.neuron_router.usage_ema_feature_v":         "model.router.usage_ema_feature_v",
    "router.neuron_router.usage_ema_restore_q":         "model.router.usage_ema_restore_q",
    "router.neuron_router.usage_ema_restore_k":         "model.router.usage_ema_restore_k",
    "router.neuron_router.usage_ema_restore_v":         "model.router.usage_ema_restore_v",
    "router.neuron_router.usage_ema_feature_know":      "model.router.usage_ema_feature_know",
    "router.neuron_router.usage_ema_restore_know":      "model.router.usage_ema_restore_know",
    # the selective SSM (cumulative routing only)
    "global_ssm.A_log":                                 "model.ssm.A_log",
    "global_ssm.context_scale":                         "model.ssm.context_scale",
    "global_ssm.W_delta.weight":                        "model.ssm.delta_proj.weight",
    "global_ssm.W_B.weight":                            "model.ssm.B_proj.weight",
    "global_ssm.W_C.weight":                            "model.ssm.C_proj.weight",
    "global_ssm.ssm_norm.weight":                       "model.ssm.norm.weight",
    "global_ssm.ssm_norm.bias":                         "model.ssm.norm.bias",
    "global_ssm.context_proj.weight":                   "model.ssm.context_proj.weight",
    "global_ssm.importance_proj.weight":                "model.ssm.importance_proj.weight",
    # per layer: two LayerNorms and W_O
    "layers.{i}.norm1.weight":                          "model.layers.{i}.attention_norm.weight",
    "layers.{i}.norm1.bias":                            "model.layers.{i}.attention_norm.bias",
    "layers.{i}.norm2.weight":                          "model.layers.{i}.knowledge_norm.weight",
    "layers.{i}.norm2.bias":                            "model.layers.{i}.knowledge_norm.bias",
    "layers.{i}.attn.expand_O.weight":                  "model.layers.{i}.attention.o_proj.weight",
}

# Alias keys (research name -> the research name of the tensor it is a second name for). Dropped.
ALIAS_MAP = {
    "lm_head.weight": "token_emb.weight",
    **{
        f"layers.{{i}}.{circuit}.shared_neurons.{pool}": f"shared_neurons.{pool}"
        for circuit in ("attn", "knowledge")
        for pool in ("f_neurons", "r_neurons", "feature_know", "restore_know")
    },
}

SSM_PREFIX = "global_ssm."
COMPILE_PREFIX = "_orig_mod."
ROUTING_FLAGS = ("attention_token_routing", "knowledge_token_routing", "use_ssm_context")
SUPPORTED_MODEL_VERSIONS = ("17.1",)

# Research constructor keywords (spec §1) and what happens when a config lacks them.
RESEARCH_KEYWORDS = (
    "vocab_size", "d_model", "n_layers", "n_heads", "rank", "knowledge_rank", "max_seq_len", "state_dim", "d_space",
    "n_feature_qk", "n_feature_v", "n_restore_qk", "n_restore_v", "n_feature_know", "n_restore_know",
    "top_k_feature_qk", "top_k_feature_v", "top_k_restore_qk", "top_k_restore_v", "top_k_feature_know",
    "top_k_restore_know", "dropout", "router_dropout", "attention_token_routing", "knowledge_token_routing",
    "use_ssm_context", "gradient_checkpointing",
)
# research keyword -> (research key of the tensor, dimension) that fixes it. The layer count is the number of
# layer indices present. state_dim is inferable only when the checkpoint holds the SSM.
INFERABLE_SIZES = {
    "vocab_size": ("token_emb.weight", 0),
    "d_model": ("token_emb.weight", 1),
    "max_seq_len": ("pos_emb.weight", 0),
    "rank": ("shared_neurons.f_neurons", 2),
    "knowledge_rank": ("shared_neurons.feature_know", 2),
    "d_space": ("router.neuron_router.neuron_emb", 1),
    "state_dim": ("global_ssm.A_log", 1),
    "n_feature_qk": ("router.neuron_router.usage_ema_feature_q", 0),
    "n_feature_v": ("router.neuron_router.usage_ema_feature_v", 0),
    "n_restore_qk": ("router.neuron_router.usage_ema_restore_q", 0),
    "n_restore_v": ("router.neuron_router.usage_ema_restore_v", 0),
    "n_feature_know": ("shared_neurons.feature_know", 0),
    "n_restore_know": ("shared_neurons.restore_know", 0),
}
# Training-only settings: they do not change the function an evaluation-mode model computes, so a missing value
# takes the research default (printed).
TRAINING_ONLY_DEFAULTS = {"dropout": 0.1, "router_dropout": 0.1}
# Needed and not recoverable from any tensor.
NOT_INFERABLE = (
    "n_heads", "top_k_feature_qk", "top_k_feature_v", "top_k_restore_qk", "top_k_restore_v", "top_k_feature_know",
    "top_k_restore_know",
)
IGNORED_KEYWORDS = ("gradient_checkpointing", "model_version")


class CheckpointError(ValueError):
    """A research checkpoint or config that cannot be converted faithfully."""


# ----------------------------------------------------------------------------------------------------------------
# key mapping
# ----------------------------------------------------------------------------------------------------------------

def _template_regex(template: str) -> re.Pattern:
    return re.compile("^" + re.escape(template).replace(r"\{i\}", r"(?P<i>\d+)") + "$")


_KEY_PATTERNS = [(_template_regex(src), dst) for src, dst in KEY_MAP.items()]
_ALIAS_PATTERNS = [(_template_regex(src), dst) for src, dst in ALIAS_MAP.items()]


def _match(patterns, key):
    for pattern, target in patterns:
        m = pattern.match(key)
        if m:
            return target.replace("{i}", m.group("i")) if "i" in m.groupdict() else target
    return None


def research_to_ours(key: str) -> str | None:
    """Our name for a research key, or None if it is not a mapped key (an alias or unknown)."""
    return _match(_KEY_PATTERNS, key)


def alias_target(key: str) -> str | None:
    """For an alias key, the research key of the tensor it aliases; else None."""
    return _match(_ALIAS_PATTERNS, key)


def strip_compile_prefix(state_dict: dict) -> dict:
    """Remove torch.compile's `_orig_mod.` prefix (from every key that has it)."""
    return {k.removeprefix(COMPILE_PREFIX) if k.startswith(COMPILE_PREFIX) else k: v for k, v in state_dict.items()}


# ----------------------------------------------------------------------------------------------------------------
# reading checkpoints and configs
# ----------------------------------------------------------------------------------------------------------------

def load_research_checkpoint(path: str | os.PathLike) -> tuple[dict, dict | None]:
    """(state dict with compile prefixes removed, embedded config dict or None). Loads with weights_only=True."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    except Exception as err:  # noqa: BLE001  (pickle errors from weights_only name the offending global)
        raise CheckpointError(f"could not load {path} with torch.load(weights_only=True): {err}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, expected a state dict or a dict with "
                              "'model_state_dict'")
    config = None
    if "model_state_dict" in obj:
        state_dict = obj["model_state_dict"]
        present = [name for name in ("config", "model_config") if isinstance(obj.get(name), dict)]
        if len(present) == 2 and obj["config"] != obj["model_config"]:
            raise CheckpointError(f"{path} has both 'config' and 'model_config' and they differ")
        if present:
            config = obj[present[0]]
    else:
        state_dict = obj
    if not isinstance(state_dict, dict) or not state_dict:
        raise CheckpointError(f"{path} holds no state dict (an empty or non-dict 'model_state_dict')")
    bad = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: state-dict entries that are not tensors: {', '.join(map(str, bad))}")
    return strip_compile_prefix(state_dict), config


def load_config_file(path: str | os.PathLike) -> dict:
    """Research constructor keywords from a JSON file or a research training YAML (its `model:` section)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"config file {path} does not exist")
    text = path.read_text()
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise CheckpointError(f"config file {path} is not valid JSON: {err}") from None
    else:
        try:
            import yaml
        except ImportError:
            raise CheckpointError(
                f"reading the YAML config {path} needs PyYAML (pip install pyyaml), or pass a JSON file"
            ) from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise CheckpointError(f"config file {path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"config file {path} does not hold a mapping")
    return model_section(data, str(path))


def model_section(data: dict, where: str) -> dict:
    """A training config's `model:` section, or the dict itself when it is already the constructor keywords."""
    if isinstance(data.get("model"), dict):
        return dict(data["model"])
    return dict(data)


def merge_configs(embedded: dict | None, from_file: dict | None) -> dict:
    """The checkpoint's config and the user's config file; a key both give must agree."""
    merged = dict(model_section(embedded, "checkpoint") if embedded else {})
    for key, value in (from_file or {}).items():
        if key in merged and merged[key] != value:
            raise CheckpointError(
                f"config conflict for {key!r}: the checkpoint says {merged[key]!r}, the config file {value!r}"
            )
        merged[key] = value
    return merged


def resolve_research_config(config: dict, state_dict: dict, log=print) -> dict:
    """Complete research constructor keywords: check them, infer unambiguous sizes, refuse what is missing."""
    config = dict(config)
    unknown = sorted(k for k in config if k not in RESEARCH_KEYWORDS and k not in IGNORED_KEYWORDS)
    if unknown:
        raise CheckpointError(
            f"unknown research config keys: {', '.join(unknown)} (accepted: {', '.join(RESEARCH_KEYWORDS)})"
        )
    version = config.pop("model_version", None)
    if version is not None and str(version) not in SUPPORTED_MODEL_VERSIONS:
        raise CheckpointError(
            f"model_version={version!r}: this converter reads DAWN v{', v'.join(SUPPORTED_MODEL_VERSIONS)} only"
        )
    config.pop("gradient_checkpointing", None)

    missing_flags = [f for f in ROUTING_FLAGS if f not in config]
    if missing_flags:
        raise CheckpointError(
            f"the config does not set {', '.join(missing_flags)}. The routing flags are not in the state dict "
            "and decide which function the weights compute (the published DAWN-39M: attention_token_routing=true, "
            "knowledge_token_routing=true, use_ssm_context=false); give them in the checkpoint's config or --config"
        )
    for flag in ROUTING_FLAGS:
        if not isinstance(config[flag], bool):
            raise CheckpointError(f"{flag}={config[flag]!r} must be true or false")

    inferred = {}
    for name, (key, dim) in INFERABLE_SIZES.items():
        if name not in config and key in state_dict and state_dict[key].dim() > dim:
            inferred[name] = int(state_dict[key].shape[dim])
    if "n_layers" not in config:
        indices = {int(m.group(1)) for k in state_dict for m in [re.match(r"^layers\.(\d+)\.", k)] if m}
        if indices:
            if indices != set(range(len(indices))):
                raise CheckpointError(f"cannot infer n_layers: layer indices {sorted(indices)} are not 0..L-1")
            inferred["n_layers"] = len(indices)
    config.update(inferred)
    if inferred:
        log("note: inferred from tensor shapes: " + ", ".join(f"{k}={v}" for k, v in sorted(inferred.items())))

    missing = [k for k in RESEARCH_KEYWORDS if k not in config and k not in TRAINING_ONLY_DEFAULTS
               and k not in ROUTING_FLAGS and k != "gradient_checkpointing"]
    if missing:
        reason = {k: "not recoverable from any tensor" if k in NOT_INFERABLE else "its tensor is missing"
                  for k in missing}
        raise CheckpointError("the config lacks " + ", ".join(f"{k} ({reason[k]})" for k in missing))
    defaulted = {k: v for k, v in TRAINING_ONLY_DEFAULTS.items() if k not in config}
    if defaulted:
        config.update(defaulted)
        log("note: training-only settings not in the config, research defaults used: "
            + ", ".join(f"{k}={v}" for k, v in defaulted.items()))
    return config


# ----------------------------------------------------------------------------------------------------------------
# the conversion itself
# ----------------------------------------------------------------------------------------------------------------

def expected_shapes(dawn_config) -> dict:
    """Our state-dict names and shapes for a DawnConfig (built on the meta device: no memory, no init)."""
    from modeling_dawn import DawnForCausalLM

    with torch.device("meta"):
        model = DawnForCausalLM(dawn_config)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    shapes.pop("lm_head.weight", None)  # tied to model.embed_tokens.weight
    return shapes


def convert_state_dict(state_dict: dict, dawn_config, log=print) -> dict:
    """Research state dict (compile prefixes removed) -> our state dict, for `dawn_config`.

    Refuses (CheckpointError naming every offending key) unknown keys, aliases that differ from their tensor,
    missing tensors, mis-shaped tensors and non-finite values.
    """
    uses_ssm = dawn_config.uses_ssm
    converted, source, unexpected, bad_alias, dropped_ssm = {}, {}, [], [], []
    for key, tensor in state_dict.items():
        target = alias_target(key)
        if target is not None:
            if target in state_dict and not (
                state_dict[target].shape == tensor.shape and torch.equal(state_dict[target], tensor)
            ):
                bad_alias.append(f"{key} (differs from {target})")
            continue
        ours = research_to_ours(key)
        if ours is None:
            unexpected.append(key)
        elif key.startswith(SSM_PREFIX) and not uses_ssm:
            dropped_ssm.append(key)
        else:
            converted[ours], source[ours] = tensor, key

    expected = expected_shapes(dawn_config)
    # mapped names this config has no place for (e.g. layers.{i} beyond n_layers)
    unexpected += [f"{source[k]} (no {k} in this config)" for k in converted if k not in expected]
    problems = []
    if unexpected:
        problems.append("unexpected tensors: " + ", ".join(sorted(unexpected)))
    if bad_alias:
        problems.append("alias tensors that are not copies of what they alias: " + ", ".join(sorted(bad_alias)))
    ours_to_research = _inverse_names(expected)
    missing = sorted(k for k in expected if k not in converted)
    if missing:
        problems.append("missing tensors: " + ", ".join(f"{ours_to_research[k]} (-> {k})" for k in missing))
    misshaped = sorted(
        f"{source[k]} has shape {list(v.shape)}, expected {list(expected[k])}"
        for k, v in converted.items() if k in expected and tuple(v.shape) != expected[k]
    )
    if misshaped:
        problems.append("mis-shaped tensors: " + "; ".join(misshaped))
    nonfinite = sorted(source[k] for k, v in converted.items()
                       if v.is_floating_point() and not torch.isfinite(v).all())
    if nonfinite:
        problems.append("tensors with NaN or inf values: " + ", ".join(nonfinite))
    if problems:
        raise CheckpointError("refusing the checkpoint:\n  " + "\n  ".join(problems))
    if dropped_ssm:
        log(f"note: dropped the SSM ({len(dropped_ssm)} tensors, global_ssm.*): with token routing in both "
            "circuits the research model never runs it, so it was never trained")
    return converted


def _inverse_names(our_names) -> dict:
    """Our name -> research name, for messages."""
    out = {}
    for src, dst in KEY_MAP.items():
        if "{i}" in src:
            for name in our_names:
                m = _template_regex(dst).match(name)
                if m:
                    out[name] = src.replace("{i}", m.group("i"))
        else:
            out[dst] = src
    return _Default(out)


class _Default(dict):
    def __missing__(self, key):
        return key


def ours_to_research_state_dict(our_state_dict: dict) -> dict:
    """Inverse of the map (our names -> research names), without aliases. For tests and round trips."""
    inverse = _inverse_names(list(our_state_dict))
    return {inverse[k]: v for k, v in our_state_dict.items() if k != "lm_head.weight"}


def build_dawn_config(research_config: dict):
    """A DawnConfig from complete research constructor keywords (aliases resolved by DawnConfig itself)."""
    from modeling_dawn import DawnConfig

    try:
        return DawnConfig(**research_config)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"invalid research config: {err}") from None


__all__ = [
    "KEY_MAP", "ALIAS_MAP", "ROUTING_FLAGS", "INFERABLE_SIZES", "CheckpointError", "research_to_ours",
    "alias_target", "strip_compile_prefix", "load_research_checkpoint", "load_config_file", "merge_configs",
    "resolve_research_config", "expected_shapes", "convert_state_dict", "ours_to_research_state_dict",
    "build_dawn_config",
]
