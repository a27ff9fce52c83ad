"""Neuron interventions on a loaded DAWN model: ablate, scale or force neurons of any route, and measure the effect.

Every DAWN layer has a `route_intervention` hook, a callable
``(layer_idx, route_name, indices [B,S,k], weights [B,S,k], preferences [B,S,N]) -> (indices, weights)`` applied
after each routing decision. The context managers here install such a hook on every decoder layer and restore the
previous one on exit. An existing hook is *composed with*, never clobbered: it runs first and the edit is applied to
its output, so interventions nest (exit them in reverse order, as ``with`` blocks do).

Semantics of one `NeuronEdit` (a route, some neurons of that route's pool, optionally some layers):

* ``ablate``: a chosen neuron's weight is set to zero (the token's composed map loses that component). The other
  weights are left as they are unless ``renormalize=True`` (then the surviving weights are rescaled to sum to one;
  a token whose every chosen neuron was ablated keeps all-zero weights).
* ``scale``: a chosen neuron's weight is multiplied by ``factor`` (``renormalize`` as above).
* ``force``: the neurons are put into every token's selection. A forced neuron that the router did not pick
  replaces the chosen neuron with the smallest weight (never another forced one); each forced neuron gets weight
  ``weight`` (default 1/k) and the other chosen neurons are rescaled so the k weights still sum to one. k is kept.

Nothing here is imported by the modeling code; use it as
``from modeling_dawn.neuron_interventions import ablate, measure_intervention``.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from .routing import ROUTE_NAMES, route_sizes

MODES = ("ablate", "scale", "force")


@dataclass(frozen=True)
class NeuronEdit:
    """One intervention: `mode` on `neurons` (indices into the route's pool, or "all") of `route` in `layers`
    (None: every layer). `factor` is the multiplier for "scale"; `weight` the weight of each forced neuron."""

    route: str
    neurons: tuple | str = "all"
    mode: str = "ablate"
    factor: float = 0.0
    layers: tuple | None = None
    weight: float | None = None
    renormalize: bool = False


def decoder_layers(model) -> list:
    """The decoder layers (each with a `route_intervention` attribute) of a DAWN model or task model."""
    for candidate in (model, getattr(model, "model", None), getattr(getattr(model, "model", None), "model", None)):
        layers = getattr(candidate, "layers", None)
        if layers is not None and len(layers) and all(hasattr(layer, "route_intervention") for layer in layers):
            return list(layers)
    raise TypeError(
        f"{type(model).__name__} has no DAWN decoder layers with a `route_intervention` hook "
        "(expected model.model.layers or model.layers)"
    )


def _validated(edit: NeuronEdit, config) -> tuple[NeuronEdit, torch.Tensor, frozenset | None]:
    if edit.route not in ROUTE_NAMES:
        raise ValueError(f"unknown route {edit.route!r}; routes are {list(ROUTE_NAMES)}")
    if edit.mode not in MODES:
        raise ValueError(f"unknown intervention mode {edit.mode!r}; modes are {list(MODES)}")
    n, k = route_sizes(config)[edit.route]
    if isinstance(edit.neurons, str):
        if edit.neurons != "all":
            raise ValueError(f"neurons must be a list of indices or 'all', got {edit.neurons!r}")
        neurons = list(range(n))
    else:
        neurons = sorted({int(i) for i in edit.neurons})
    if not neurons:
        raise ValueError(f"{edit.mode} on route {edit.route}: no neurons given")
    bad = [i for i in neurons if not 0 <= i < n]
    if bad:
        raise ValueError(f"route {edit.route} selects from a pool of {n} neurons; indices out of range: {bad}")
    if edit.mode == "force":
        if len(neurons) > k:
            raise ValueError(f"cannot force {len(neurons)} neurons into route {edit.route}, which selects k={k}")
        weight = edit.weight if edit.weight is not None else 1.0 / k
        if not 0.0 <= weight or len(neurons) * weight > 1.0 + 1e-6:
            raise ValueError(f"forced weight {weight} x {len(neurons)} neurons must lie in [0, 1]")
    if edit.mode == "scale" and not math.isfinite(edit.factor):
        raise ValueError(f"scale factor must be finite, got {edit.factor}")
    n_layers = config.num_hidden_layers
    layers = None
    if edit.layers is not None:
        layers = frozenset(int(i) for i in edit.layers)
        bad = sorted(i for i in layers if not 0 <= i < n_layers)
        if bad:
            raise ValueError(f"the model has {n_layers} layers; layer indices out of range: {bad}")
    return edit, torch.tensor(neurons, dtype=torch.long), layers


def _renormalise(weights: torch.Tensor) -> torch.Tensor:
    total = weights.sum(dim=-1, keepdim=True)
    return torch.where(total > 0, weights / total.clamp(min=1e-12), weights)


def _apply(edit: NeuronEdit, neurons: torch.Tensor, k: int, indices: torch.Tensor, weights: torch.Tensor):
    neurons = neurons.to(indices.device)
    if edit.mode in ("ablate", "scale"):
        factor = 0.0 if edit.mode == "ablate" else float(edit.factor)
        hit = torch.isin(indices, neurons)
        weights = torch.where(hit, weights * factor, weights)
        return indices, (_renormalise(weights) if edit.renormalize else weights)
    # force
    w_force = edit.weight if edit.weight is not None else 1.0 / k
    indices, weights = indices.clone(), weights.clone()
    for neuron in neurons.tolist():
        forced_slots = torch.isin(indices, neurons)
        present = (indices == neuron).any(dim=-1, keepdim=True)  # [B, S, 1]
        candidates = weights.masked_fill(forced_slots, float("inf"))
        slot = candidates.argmin(dim=-1, keepdim=True)  # the weakest non-forced slot
        new_idx = torch.where(present, indices.gather(-1, slot), torch.full_like(slot, neuron))
        indices = indices.scatter(-1, slot, new_idx)
    forced_slots = torch.isin(indices, neurons)
    others = weights.masked_fill(forced_slots, 0.0)
    target = max(0.0, 1.0 - len(neurons) * w_force)
    others_sum = others.sum(dim=-1, keepdim=True)
    rescaled = torch.where(others_sum > 0, others * (target / others_sum.clamp(min=1e-12)), others)
    weights = torch.where(forced_slots, torch.full_like(weights, w_force), rescaled)
    return indices, weights


def make_route_hook(edits, config, previous=None):
    """A `route_intervention` callable applying `edits` (after `previous`, if any)."""
    prepared = [_validated(e, config) for e in edits]
    sizes = route_sizes(config)

    def hook(layer_idx, route_name, indices, weights, preferences):
        if previous is not None:
            indices, weights = previous(layer_idx, route_name, indices, weights, preferences)
        for edit, neurons, layers in prepared:
            if edit.route != route_name or (layers is not None and layer_idx not in layers):
                continue
            indices, weights = _apply(edit, neurons, sizes[route_name][1], indices, weights)
        return indices, weights

    hook.edits = tuple(e for e, _, _ in prepared)
    return hook


@contextmanager
def intervene(model, edits):
    """Install `edits` (a NeuronEdit or a list of them) on every decoder layer of `model` for the `with` block."""
    if isinstance(edits, NeuronEdit):
        edits = [edits]
    edits = list(edits)
    layers = decoder_layers(model)
    previous = [layer.route_intervention for layer in layers]
    hooks = [make_route_hook(edits, model.config, prev) for prev in previous]  # validates before touching layers
    try:
        for layer, hook in zip(layers, hooks):
            layer.route_intervention = hook
        yield model
    finally:
        for layer, prev in zip(layers, previous):
            layer.route_intervention = prev


def ablate(model, route, neurons="all", layers=None, renormalize=False):
    """Context manager: zero the weight of `neurons` of `route` (in `layers`, default all) whenever chosen."""
    return intervene(model, NeuronEdit(route, _tuple(neurons), "ablate", 0.0, _tuple(layers), None, renormalize))


def scale(model, route, neurons, factor, layers=None, renormalize=False):
    """Context manager: multiply the weight of `neurons` of `route` by `factor` whenever chosen."""
    return intervene(model, NeuronEdit(route, _tuple(neurons), "scale", float(factor), _tuple(layers), None,
                                       renormalize))


def force(model, route, neurons, layers=None, weight=None):
    """Context manager: make every token select `neurons` of `route`, each with `weight` (default 1/k)."""
    return intervene(model, NeuronEdit(route, _tuple(neurons), "force", 0.0, _tuple(layers), weight))


def _tuple(x):
    if x is None or isinstance(x, str):
        return x
    if isinstance(x, int):
        return (x,)
    return tuple(int(i) for i in x)


# --------------------------------------------------------------------------------------------- measuring effects


@torch.no_grad()
def token_losses(model, input_ids, attention_mask=None):
    """Next-token cross-entropy per position: (loss [B, S-1], predictions [B, S-1], log-probs [B, S-1, V],
    valid [B, S-1]); position t scores the prediction of token t+1."""
    device = next(model.parameters()).device
    input_ids = input_ids.to(device)
    attention_mask = attention_mask.to(device) if attention_mask is not None else None
    out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    logp = torch.log_softmax(out.logits[:, :-1].float(), dim=-1)
    target = input_ids[:, 1:]
    loss = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    valid = torch.ones_like(target, dtype=torch.bool)
    if attention_mask is not None:
        valid = attention_mask[:, 1:].bool() & attention_mask[:, :-1].bool()
    return loss, logp.argmax(-1), logp, valid


@torch.no_grad()
def measure_intervention(model, batches, edits, tag_names=None) -> dict:
    """Run every batch with and without `edits`; compare next-token loss, accuracy and predictions.

    batches: iterable of dicts with `input_ids` [B, S], optional `attention_mask` and optional `pos` [B, S] (tag id
    of each token, -1 for none). With `pos`, losses are also reported per tag of the *predicted* token
    (``tag_names[id]``), which is what "the loss on words of that tag" means.
    Returns {"baseline": {...}, "intervened": {...}, "delta_loss", "changed_predictions", "kl", "tokens"}.
    """
    was_training = model.training
    model.eval()
    totals = {"base": [0.0, 0.0], "int": [0.0, 0.0]}  # loss sum, correct
    tag_totals = {}  # tag -> [count, base loss sum, intervened loss sum]
    n = changed = 0
    kl_sum = 0.0
    try:
        for batch in batches:
            ids, mask = batch["input_ids"], batch.get("attention_mask")
            base_loss, base_pred, base_logp, valid = token_losses(model, ids, mask)
            with intervene(model, edits):
                int_loss, int_pred, int_logp, _ = token_losses(model, ids, mask)
            target = ids[:, 1:].to(base_pred.device)
            v = valid
            n += int(v.sum())
            totals["base"][0] += float(base_loss[v].sum())
            totals["int"][0] += float(int_loss[v].sum())
            totals["base"][1] += float((base_pred == target)[v].sum())
            totals["int"][1] += float((int_pred == target)[v].sum())
            changed += int((base_pred != int_pred)[v].sum())
            kl = (base_logp.exp() * (base_logp - int_logp)).sum(-1)
            kl_sum += float(kl[v].sum())
            pos = batch.get("pos")
            if pos is not None:
                tags = pos[:, 1:].to(v.device)
                for tag in torch.unique(tags[v]).tolist():
                    if tag < 0:
                        continue
                    sel = v & (tags == tag)
                    name = tag_names[tag] if tag_names is not None else str(tag)
                    entry = tag_totals.setdefault(name, [0, 0.0, 0.0])
                    entry[0] += int(sel.sum())
                    entry[1] += float(base_loss[sel].sum())
                    entry[2] += float(int_loss[sel].sum())
    finally:
        model.train(was_training)
    if n == 0:
        raise ValueError("measure_intervention: no scored positions (each row needs at least two tokens)")
    result = {
        "tokens": n,
        "baseline": {"loss": totals["base"][0] / n, "accuracy": totals["base"][1] / n},
        "intervened": {"loss": totals["int"][0] / n, "accuracy": totals["int"][1] / n},
        "changed_predictions": changed / n,
        "kl": kl_sum / n,
    }
    result["delta_loss"] = result["intervened"]["loss"] - result["baseline"]["loss"]
    if tag_totals:
        result["per_tag"] = {
            tag: {"tokens": c, "baseline_loss": b / c, "intervened_loss": i / c, "delta_loss": (i - b) / c}
            for tag, (c, b, i) in sorted(tag_totals.items())
        }
    return result


def _loss_on_tag(measurement: dict, tag: str) -> tuple:
    """(delta loss on tokens of `tag`, delta loss on all other tokens, their token counts) from a measure_intervention result."""
    per_tag = measurement["per_tag"]
    tag_n = per_tag[tag]["tokens"]
    tag_delta = per_tag[tag]["delta_loss"]
    other_n = sum(v["tokens"] for t, v in per_tag.items() if t != tag)
    other_delta = (sum(v["delta_loss"] * v["tokens"] for t, v in per_tag.items() if t != tag) / other_n
                   if other_n else float("nan"))
    return tag_delta, other_delta, tag_n, other_n


def pos_ablation_experiment(model, batches, neurons, route, tag, tag_names, layers=None, n_random=3, seed=0) -> dict:
    """Ablate `neurons` (e.g. the neurons of `route` most aligned with POS `tag`) and, as a control, `n_random`
    draws of as many random neurons of the same route (outside the aligned set when the pool allows); compare the loss change on tokens tagged `tag` with the
    change on all other tokens. `batches` must carry `pos` and be re-iterable (a list)."""
    batches = list(batches)
    n_pool = route_sizes(model.config)[route][0]
    neurons = sorted(int(i) for i in neurons)
    if not neurons or len(neurons) >= n_pool:
        raise ValueError(f"ablate between 1 and {n_pool - 1} neurons of {route}, got {len(neurons)}")

    def run(chosen):
        m = measure_intervention(model, batches, NeuronEdit(route, tuple(chosen), "ablate", layers=_tuple(layers)),
                                 tag_names)
        if tag not in m.get("per_tag", {}):
            raise ValueError(f"no token tagged {tag} in the evaluation batches")
        tag_delta, other_delta, tag_n, other_n = _loss_on_tag(m, tag)
        return {"neurons": list(chosen), "delta_loss_tag": tag_delta, "delta_loss_other": other_delta,
                "delta_loss_all": m["delta_loss"], "changed_predictions": m["changed_predictions"],
                "tag_tokens": tag_n, "other_tokens": other_n, "baseline_loss_tag": m["per_tag"][tag]["baseline_loss"]}

    aligned = run(neurons)
    gen = torch.Generator().manual_seed(seed)
    # the control draws from the neurons not in the aligned set when there are enough of them
    others = [i for i in range(n_pool) if i not in set(neurons)]
    pool = others if len(others) >= len(neurons) else list(range(n_pool))
    randoms = [run(sorted(pool[j] for j in torch.randperm(len(pool), generator=gen)[: len(neurons)].tolist()))
               for _ in range(n_random)]
    mean = lambda key: sum(r[key] for r in randoms) / len(randoms)  # noqa: E731
    return {
        "route": route, "tag": tag, "layers": "all" if layers is None else list(layers), "n_neurons": len(neurons),
        "aligned": aligned, "random": randoms,
        "random_mean_delta_loss_tag": mean("delta_loss_tag"),
        "random_mean_delta_loss_other": mean("delta_loss_other"),
        # how much more the aligned ablation hurts the tag's tokens than the other tokens, minus the same for random
        "selectivity_aligned": aligned["delta_loss_tag"] - aligned["delta_loss_other"],
        "selectivity_random": mean("delta_loss_tag") - mean("delta_loss_other"),
    }


__all__ = [
    "NeuronEdit", "MODES", "decoder_layers", "make_route_hook", "intervene", "ablate", "scale", "force",
    "token_losses", "measure_intervention", "pos_ablation_experiment",
]
