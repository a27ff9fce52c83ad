"""One DAWN layer: routed attention, then the routed knowledge circuit, each pre-LN with a residual (spec §3).

A layer owns two LayerNorms and W_O. Everything else (neurons, router) arrives as tensors in `SharedTensors`.
"""

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer

from .attention import DawnAttention
from .knowledge import DawnKnowledge
from .routing import (
    ATTENTION_ROUTES, KNOWLEDGE_ROUTES, RouteTrace, decide_route, load_balance_term, pool_slices, route_sizes,
    selection_fraction, topk_renormalise,
)
from .shared_weights import SharedTensors


@dataclass
class RoutingInputs:
    """Per-forward routing context shared by all layers.

    valid: [B, S] bool, True at real (non-padding) tokens.
    scores: [B, S] SSM importance scores, or None when no circuit routes cumulatively.
    causal: cumulative averages over positions <= t (causal LM) or over the whole row (masked LM).
    cache: a `DawnCache` holding running routing state for incremental decoding, or None.
    want_*: what the caller asked to get back.
    """

    valid: torch.Tensor
    scores: torch.Tensor | None = None
    causal: bool = True
    cache: object | None = None
    want_traces: bool = False
    want_preferences: bool = False
    want_logits: bool = False
    want_statistics: bool = False  # load-balance terms and selection fractions (training)


@dataclass
class LayerRoutingInfo:
    traces: dict = field(default_factory=dict)  # route -> RouteTrace (want_traces)
    logits: list = field(default_factory=list)  # [B, S, N] per route, in ROUTES order (want_logits)
    load_balance: torch.Tensor | None = None  # scalar, summed over the six attention routes (want_statistics)
    fractions: dict = field(default_factory=dict)  # route -> [N] fraction of valid tokens selecting (want_statistics)


class DawnDecoderLayer(GradientCheckpointingLayer):
    def __init__(self, config, layer_idx: int, is_causal: bool = True):
        super().__init__()
        self.layer_idx = layer_idx
        self.hidden_dropout = config.hidden_dropout
        self.router_dropout = config.router_dropout
        self.router_dim = config.router_dim
        self.token_routing = {
            "attention": config.attention_token_routing, "knowledge": config.knowledge_token_routing,
        }
        self.pool_slices = pool_slices(config)
        self.route_sizes = route_sizes(config)
        self.n_feature_qk, self.n_restore_qk = config.n_feature_qk, config.n_restore_qk
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = DawnAttention(config, layer_idx, is_causal=is_causal)
        self.knowledge_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.knowledge = DawnKnowledge(config)
        # Optional callable (layer_idx, route_name, indices, weights, preferences) -> (indices, weights), applied
        # after every routing decision of this layer. The interpretability toolkit uses it for neuron
        # ablation / scaling / forcing; it is None (no cost) otherwise.
        self.route_intervention = None
        self._index_copies = {}  # see _on_device
        # token routing decides together the routes of a circuit with the same pool size N and the same k
        self._token_route_groups = {
            circuit: self._group_routes(routes) for circuit, routes in
            (("attention", ATTENTION_ROUTES), ("knowledge", KNOWLEDGE_ROUTES))
        }

    def _group_routes(self, routes) -> list:
        """[(N, k, [route positions], index tensor or None when the group is the whole circuit)]."""
        groups = {}
        for r, route in enumerate(routes):
            groups.setdefault(self.route_sizes[route.name], []).append(r)
        return [(n, k, members, None if len(members) == len(routes) else torch.tensor(members, device="cpu"))
                for (n, k), members in groups.items()]

    def _route(self, circuit, routes, projections, embeddings, route_table, ctx: RoutingInputs, info: LayerRoutingInfo):
        """Decide every route of one circuit -> route -> (indices, weights).

        projections: [B, S, R, Ds] (one per route); embeddings: [N_total, Ds]; route_table: [R, Nmax, Ds] (the
        routes' pool rows, padded)."""
        cumulative = not self.token_routing[circuit]
        if cumulative:
            decisions = [self._decide_cumulative(route, projections[:, :, r], embeddings, ctx)
                         for r, route in enumerate(routes)]
        else:
            decisions = self._decide_token(circuit, routes, projections, route_table)
        choices = {}
        for route, (indices, weights, prefs, logits) in zip(routes, decisions):
            if self.route_intervention is not None:
                indices, weights = self.route_intervention(self.layer_idx, route.name, indices, weights, prefs)
            choices[route.name] = (indices, weights)
            if ctx.want_traces:
                info.traces[route.name] = RouteTrace(indices, weights, prefs if ctx.want_preferences else None)
            if ctx.want_logits:
                info.logits.append(logits)
            if ctx.want_statistics:
                info.fractions[route.name] = selection_fraction(indices, ctx.valid, self.route_sizes[route.name][0])
                if circuit == "attention":
                    term = load_balance_term(prefs, ctx.valid)
                    info.load_balance = term if info.load_balance is None else info.load_balance + term
        return choices

    def _decide_cumulative(self, route, u, embeddings, ctx: RoutingInputs):
        """One route in cumulative mode (running preferences, state kept in the cache). u: [B, S, Ds]."""
        logits = u @ embeddings[self.pool_slices[route.pool]].transpose(0, 1)  # [B, S, N]
        state_key = f"routing.{self.layer_idx}.{route.name}"
        state = None
        if ctx.cache is not None:
            num, den = ctx.cache.get_state(state_key + ".num"), ctx.cache.get_state(state_key + ".den")
            state = None if num is None else (num, den)
        indices, weights, prefs, new_state = decide_route(
            logits, self.route_sizes[route.name][1], ctx.scores, ctx.valid, ctx.causal, state
        )
        if ctx.cache is not None:
            ctx.cache.set_state(state_key + ".num", new_state[0])
            ctx.cache.set_state(state_key + ".den", new_state[1])
        return indices, weights, prefs, logits

    def _on_device(self, index: torch.Tensor, device) -> torch.Tensor:
        """`index` (a CPU constant derived from the config) on `device`, copied there once."""
        if index.device == device:
            return index
        key = (id(index), str(device))
        if key not in self._index_copies:
            self._index_copies[key] = index.to(device)
        return self._index_copies[key]

    def _decide_token(self, circuit, routes, projections, route_table):
        """Token routing of a circuit's routes with the same pool size N and the same k in one go: one logits
        product, one softmax and one top-k for the group. Same result as routing them one by one, with a fraction
        of the small ops (a decoding step is bound by op count), and no padding: a group's pools have equal size.
        projections: [B, S, R, Ds]; route_table: [R, Nmax, Ds] -> per route (indices, weights, prefs, logits)."""
        out = [None] * len(routes)
        for n, k, members, member_index in self._token_route_groups[circuit]:
            if member_index is None:
                u, table = projections, route_table[:, :n]  # [B, S, G, Ds], [G, N, Ds]
            else:
                member_index = self._on_device(member_index, projections.device)
                u, table = projections[:, :, member_index], route_table[member_index, :n]
            logits = torch.einsum("bsgd,gnd->bsgn", u, table)  # [B, S, G, N]
            dtype = torch.promote_types(logits.dtype, torch.float32)  # routing in >= fp32, as decide_route
            prefs = torch.softmax(logits.to(dtype), dim=-1)
            indices, weights = topk_renormalise(prefs, k)  # [B, S, G, k]
            weights = weights.to(logits.dtype)
            for g, r in enumerate(members):
                out[r] = (indices[:, :, g], weights[:, :, g], prefs[:, :, g], logits[:, :, g])
        return out

    def forward(
        self,
        hidden_states: torch.Tensor,
        shared: SharedTensors,
        routing_inputs: RoutingInputs,
        attention_mask: torch.Tensor | None = None,
        cache=None,
        **kwargs,
    ) -> tuple[torch.Tensor, LayerRoutingInfo, torch.Tensor | None]:
        """hidden_states: [B, S, D] -> ([B, S, D], routing info, attention probabilities or None)."""
        batch, seq, _ = hidden_states.shape
        info = LayerRoutingInfo()
        ds = self.router_dim

        # --- attention circuit ---
        z = self.attention_norm(hidden_states)
        u = F.linear(z, shared.attention_proj_weight, shared.attention_proj_bias)  # [B, S, 6*Ds]
        u = F.dropout(u, self.router_dropout, self.training).view(batch, seq, 6, ds)
        choices = self._route(
            "attention", ATTENTION_ROUTES, u, shared.neuron_embeddings, shared.attention_route_embeddings,
            routing_inputs, info,
        )
        attn_out, attn_probs = self.attention(
            z, shared.feature_attention, shared.restore_attention, choices, attention_mask, cache=cache, **kwargs
        )
        hidden_states = hidden_states + F.dropout(attn_out, self.hidden_dropout, self.training)

        # --- knowledge circuit ---
        z2 = self.knowledge_norm(hidden_states)
        projections = torch.stack([
            F.dropout(F.linear(z2, shared.feature_know_proj_weight, shared.feature_know_proj_bias),
                      self.router_dropout, self.training),
            F.dropout(F.linear(z2, shared.restore_know_proj_weight, shared.restore_know_proj_bias),
                      self.router_dropout, self.training),
        ], dim=2)  # [B, S, 2, Ds]
        choices = self._route(
            "knowledge", KNOWLEDGE_ROUTES, projections, shared.neuron_embeddings, shared.knowledge_route_embeddings,
            routing_inputs, info,
        )
        know_out = self.knowledge(z2, shared.feature_knowledge, shared.restore_knowledge, choices)
        hidden_states = hidden_states + F.dropout(know_out, self.hidden_dropout, self.training)
        return hidden_states, info, attn_probs


__all__ = ["DawnDecoderLayer", "RoutingInputs", "LayerRoutingInfo"]
