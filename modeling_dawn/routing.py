"""The router's arithmetic: which neurons each token picks, and with what weights (spec §3-§4).

A *pool* is a set of neurons (rank-R matrices) shared by every layer. A *route* is one use of a pool: Q and K
route separately over the same feature pool, for instance. Each route has its own projection of the hidden
state into the router space; its logits are dot products with the (L2-normalised) embeddings of its pool's
neurons, and the chosen neurons are the top-k of the softmax, renormalised to sum to one.
"""

from typing import NamedTuple

import torch
import torch.nn.functional as F


class PoolSpec(NamedTuple):
    name: str  # e.g. "feature_qk"
    size_field: str  # config field holding the pool size
    emb_offset_order: int  # position of the pool in the neuron-embedding table (fqk | fv | rqk | rv | fk | rk)


class RouteSpec(NamedTuple):
    name: str  # e.g. "feature_q"
    circuit: str  # "attention" | "knowledge"
    pool: str  # name of the pool it selects from
    top_k_field: str  # config field holding k


POOLS = (
    PoolSpec("feature_qk", "n_feature_qk", 0),
    PoolSpec("feature_v", "n_feature_v", 1),
    PoolSpec("restore_qk", "n_restore_qk", 2),
    PoolSpec("restore_v", "n_restore_v", 3),
    PoolSpec("feature_know", "n_feature_know", 4),
    PoolSpec("restore_know", "n_restore_know", 5),
)

# The order of the six attention routes is the order of the router's attention projection output (spec §2).
ATTENTION_ROUTES = (
    RouteSpec("feature_q", "attention", "feature_qk", "top_k_feature_qk"),
    RouteSpec("feature_k", "attention", "feature_qk", "top_k_feature_qk"),
    RouteSpec("feature_v", "attention", "feature_v", "top_k_feature_v"),
    RouteSpec("restore_q", "attention", "restore_qk", "top_k_restore_qk"),
    RouteSpec("restore_k", "attention", "restore_qk", "top_k_restore_qk"),
    RouteSpec("restore_v", "attention", "restore_v", "top_k_restore_v"),
)
KNOWLEDGE_ROUTES = (
    RouteSpec("feature_know", "knowledge", "feature_know", "top_k_feature_know"),
    RouteSpec("restore_know", "knowledge", "restore_know", "top_k_restore_know"),
)
ROUTES = ATTENTION_ROUTES + KNOWLEDGE_ROUTES
ROUTE_NAMES = tuple(r.name for r in ROUTES)


def pool_slices(config) -> dict:
    """Pool name -> slice of the neuron-embedding table (rows ordered fqk | fv | rqk | rv | fk | rk)."""
    out, start = {}, 0
    for pool in POOLS:
        n = getattr(config, pool.size_field)
        out[pool.name] = slice(start, start + n)
        start += n
    return out


def route_sizes(config) -> dict:
    """Route name -> (pool size N, k)."""
    sizes = {p.name: getattr(config, p.size_field) for p in POOLS}
    return {r.name: (sizes[r.pool], getattr(config, r.top_k_field)) for r in ROUTES}


class RouteGroup(NamedTuple):
    """Routes of one circuit decided together: same pool size N and same k (`route_groups`)."""

    size: int  # N
    k: int
    members: tuple  # positions of the routes in the circuit's route tuple (e.g. ATTENTION_ROUTES)
    rows: torch.Tensor  # [G, N] int64 rows of the neuron-embedding table, member by member (on CPU)


def route_groups(config, routes) -> list:
    """The routes of a circuit grouped by (pool size, k), in order of first appearance -> [RouteGroup].

    With DAWN-39M's pools: attention {feature_q, feature_k, restore_q, restore_k} (N=64) and {feature_v,
    restore_v} (N=264); knowledge {feature_know, restore_know}. `rows` is built on CPU explicitly: models are built
    under a "meta" device context, and this is derived from the config, not loaded.
    """
    slices, sizes = pool_slices(config), route_sizes(config)
    groups = {}
    for r, route in enumerate(routes):
        groups.setdefault(sizes[route.name], []).append(r)
    return [
        RouteGroup(n, k, tuple(members), torch.stack([
            torch.arange(slices[routes[r].pool].start, slices[routes[r].pool].stop, device="cpu") for r in members
        ]))
        for (n, k), members in groups.items()
    ]


def router_logit_slices(config) -> dict:
    """Route name -> slice of the concatenated per-layer router logits (`output_router_logits=True`)."""
    out, start = {}, 0
    for name, (n, _) in route_sizes(config).items():
        out[name] = slice(start, start + n)
        start += n
    return out


def topk_renormalise(probs: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the k largest probabilities and renormalise them (spec §3).

    probs: [..., N] -> (indices [..., k] int64, weights [..., k]) with weights = p_i / (sum of the k kept + 1e-8).
    Ties are broken by `torch.topk` (the lowest index first on CPU), consistently in every path.
    """
    values, indices = probs.topk(k, dim=-1)
    weights = values / (values.sum(dim=-1, keepdim=True) + 1e-8)
    return indices, weights


def route_logits(projected: torch.Tensor, neuron_embeddings: torch.Tensor) -> torch.Tensor:
    """Plain dot products with the L2-normalised neuron embeddings, no scale.

    projected: [B, S, Ds], neuron_embeddings: [N, Ds] (raw) -> logits [B, S, N].
    """
    return projected @ F.normalize(neuron_embeddings, dim=-1).transpose(0, 1)


def running_preferences(
    logits: torch.Tensor,
    scores: torch.Tensor,
    valid: torch.Tensor,
    causal: bool,
    state: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """Importance-weighted average of the routing preferences of earlier positions (cumulative mode, spec §4).

    s_t = sum_{tau<=t, valid} exp(score_tau) p_tau / sum_{tau<=t, valid} exp(score_tau), computed in log space with
    `logcumsumexp`, so peaked scores neither underflow nor let a later token change an earlier output.
    With `causal=False` (masked LM) every position averages over all valid positions of its row.

    logits: [B, S, N] router logits, or [B, S, G, N] for G routes at once; scores: [B, S] importance;
    valid: [B, S] bool. state: running (log numerator [B, (G,) N], log denominator [B]) of earlier positions
    (incremental decoding). Returns (preferences shaped like logits, new state at the last position).

    Padding: a padded position gets the score (lowest valid score of its row - 1e4), so exp() of it relative to
    any valid score is exactly 0 in fp32 and no -inf/NaN enters the backward pass. Positions with no valid
    position at or before them (left padding) get their own preference p_t.
    """
    extra = logits.dim() - 2  # trailing dims of logits past [B, S]: (N,) or (G, N)

    def trailing(t: torch.Tensor) -> torch.Tensor:  # [B, S] or [B] -> broadcastable against logits' trailing dims
        return t.view(*t.shape, *([1] * extra))

    dtype = torch.promote_types(logits.dtype, torch.float32)
    log_p = torch.log_softmax(logits.to(dtype), dim=-1)
    s = scores.to(dtype)
    lowest = s.detach().masked_fill(~valid, float("inf")).amin(dim=1, keepdim=True)
    lowest = torch.where(torch.isfinite(lowest), lowest, torch.zeros_like(lowest)) - 1e4
    s = torch.where(valid, s, lowest)
    weighted = trailing(s) + log_p  # [B, S, (G,) N]
    if causal:
        log_num = torch.logcumsumexp(weighted, dim=1)
        log_den = torch.logcumsumexp(s, dim=1)
        seen = valid.cumsum(dim=1) > 0
    else:
        log_num = torch.logsumexp(weighted, dim=1, keepdim=True).expand_as(weighted)
        log_den = torch.logsumexp(s, dim=1, keepdim=True).expand_as(s)
        seen = valid.any(dim=1, keepdim=True).expand_as(valid)
    if state is not None:
        state_num, state_den = state
        log_num = torch.logaddexp(log_num, state_num.unsqueeze(1))
        log_den = torch.logaddexp(log_den, state_den.unsqueeze(1))
        seen = seen | torch.isfinite(state_den).unsqueeze(1)
    prefs = torch.exp(log_num - trailing(log_den))
    prefs = torch.where(trailing(seen), prefs, log_p.exp())
    last_seen = seen[:, -1]
    neg_inf = torch.full_like(log_den[:, -1], float("-inf"))
    new_state = (
        torch.where(trailing(last_seen), log_num[:, -1], float("-inf")),
        torch.where(last_seen, log_den[:, -1], neg_inf),
    )
    return prefs.to(logits.dtype), new_state


class RouteTrace(NamedTuple):
    """One route's choice in one layer: neuron `indices` [B, S, k] (into the route's pool), renormalised
    `weights` [B, S, k], and the dense `preferences` [B, S, N] top-k was taken from (None unless requested)."""

    indices: torch.Tensor
    weights: torch.Tensor
    preferences: torch.Tensor | None = None


def load_balance_term(prefs: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """N * sum_n (mean_valid(p_n) - 1/N)^2 for one route (spec §6). prefs [B, S, N], valid [B, S] -> scalar."""
    n = prefs.shape[-1]
    v = valid.unsqueeze(-1).to(prefs.dtype)
    mean = (prefs * v).sum(dim=(0, 1)) / v.sum().clamp(min=1.0)
    return n * ((mean - 1.0 / n) ** 2).sum()


@torch.no_grad()
def selection_fraction(indices: torch.Tensor, valid: torch.Tensor, n: int) -> torch.Tensor:
    """Fraction of valid tokens that select each neuron. indices [B, S, k], valid [B, S] -> [N] (no host sync)."""
    weights = valid.unsqueeze(-1).expand_as(indices).reshape(-1).float()
    counts = torch.zeros(n, device=indices.device).index_add_(0, indices.reshape(-1), weights)
    return counts / valid.sum().clamp(min=1).float()


__all__ = [
    "POOLS", "ROUTES", "ROUTE_NAMES", "ATTENTION_ROUTES", "KNOWLEDGE_ROUTES", "pool_slices", "route_sizes",
    "RouteGroup", "route_groups", "router_logit_slices", "topk_renormalise", "route_logits",
    "running_preferences", "RouteTrace", "load_balance_term", "selection_fraction",
]
