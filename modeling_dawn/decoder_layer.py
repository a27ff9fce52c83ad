"""One DAWN layer: routed attention, then the routed knowledge circuit, each pre-LN with a residual (spec §3).

A layer owns two LayerNorms and W_O. Everything else (neurons, router) arrives as tensors in `SharedTensors`.
"""

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer

from .auxiliary_losses import add_term
from .attention import DawnAttention
from .knowledge import DawnKnowledge
from .routing import (
    ATTENTION_ROUTES, KNOWLEDGE_ROUTES, RouteTrace, load_balance_term, route_groups, route_sizes,
    running_preferences, selection_fraction, topk_renormalise,
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
    knowledge_load_balance: torch.Tensor | None = None  # scalar, summed over the two knowledge routes (same)
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
        # the routes of a circuit with the same pool size N and the same k are decided together (_decide)
        self._route_groups = {
            "attention": route_groups(config, ATTENTION_ROUTES), "knowledge": route_groups(config, KNOWLEDGE_ROUTES),
        }
        self._member_index = {  # (circuit, group) -> [G] index into the circuit's projections, per device
            (circuit, i, "cpu"): torch.tensor(group.members, device="cpu")
            for circuit, groups in self._route_groups.items() for i, group in enumerate(groups)
        }

    def _route(self, circuit, routes, projections, route_tables, ctx: RoutingInputs, info: LayerRoutingInfo):
        """Decide every route of one circuit -> route -> (indices, weights).

        projections: [B, S, R, Ds] (one per route); route_tables: [G, N, Ds] per group of routes (`route_groups`)."""
        choices = {}
        decisions = self._decide(circuit, routes, projections, route_tables, ctx)
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
                term = load_balance_term(prefs, ctx.valid)
                if circuit == "attention":
                    info.load_balance = add_term(info.load_balance, term)
                else:
                    info.knowledge_load_balance = add_term(info.knowledge_load_balance, term)
        return choices

    def _members(self, circuit: str, group: int, like: torch.Tensor) -> torch.Tensor:
        """The [G] index of a group's routes among the circuit's projections, on `like`'s device (copied once)."""
        key = (circuit, group, str(like.device))
        if key not in self._member_index:
            self._member_index[key] = self._member_index[(circuit, group, "cpu")].to(like.device)
        return self._member_index[key]

    def _decide(self, circuit, routes, projections, route_tables, ctx: RoutingInputs):
        """The routes of a circuit with the same pool size N and the same k are decided in one go: one logits
        product, one softmax (token routing) or running average (cumulative routing, its state kept in the cache
        per group), and one top-k for the group. Same result as routing them one by one, with a fraction of the
        small ops (a decoding step is bound by op count), and no padding: a group's pools have equal size.
        projections: [B, S, R, Ds]; route_tables: [G, N, Ds] per group -> per route (indices, weights, prefs,
        logits)."""
        cumulative = not self.token_routing[circuit]
        out = [None] * len(routes)
        for i, ((_, k, members, _), table) in enumerate(zip(self._route_groups[circuit], route_tables)):
            u = projections if len(members) == len(routes) else projections[:, :, self._members(circuit, i, table)]
            logits = torch.einsum("bsgd,gnd->bsgn", u, table)  # [B, S, G, N]
            dtype = torch.promote_types(logits.dtype, torch.float32)  # decided in >= fp32: bf16 would create ties
            if not cumulative:
                prefs = torch.softmax(logits.to(dtype), dim=-1)
            else:
                key = f"routing.{self.layer_idx}." + "+".join(routes[r].name for r in members)
                state = None
                if ctx.cache is not None and ctx.cache.get_state(key + ".num") is not None:
                    state = (ctx.cache.get_state(key + ".num"), ctx.cache.get_state(key + ".den"))
                prefs, new_state = running_preferences(logits.to(dtype), ctx.scores, ctx.valid, ctx.causal, state)
                if ctx.cache is not None:
                    ctx.cache.set_state(key + ".num", new_state[0])  # [B, G, N]
                    ctx.cache.set_state(key + ".den", new_state[1])  # [B]
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
        choices = self._route("attention", ATTENTION_ROUTES, u, shared.attention_route_tables, routing_inputs, info)
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
            "knowledge", KNOWLEDGE_ROUTES, projections, shared.knowledge_route_tables, routing_inputs, info
        )
        know_out = self.knowledge(z2, shared.feature_knowledge, shared.restore_knowledge, choices)
        hidden_states = hidden_states + F.dropout(know_out, self.hidden_dropout, self.training)
        return hidden_states, info, attn_probs


__all__ = ["DawnDecoderLayer", "RoutingInputs", "LayerRoutingInfo"]
