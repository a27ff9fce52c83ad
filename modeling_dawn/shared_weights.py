"""The weights every layer shares: the four neuron pools and the router (spec §2).

They are stored once, in `DawnModel`, and their modules' `forward()` hands them out as tensors. Layers receive
tensors, never modules: accelerate's device-placement hooks (``device_map="auto"``, offloading) fire only through a
module's `forward`, so calling these modules once per model forward is what moves the pools to where the layers run.
"""

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .routing import ATTENTION_ROUTES, KNOWLEDGE_ROUTES, ROUTES, pool_slices, route_groups


def _view(param: torch.Tensor) -> torch.Tensor:
    """A differentiable alias of `param` that keeps its current storage."""
    return param.view(param.shape)


class SharedTensors(NamedTuple):
    """What one model forward hands each layer (positional, so activation checkpointing sees every tensor)."""

    feature_attention: torch.Tensor  # [N_fqk + N_fv, D, R]
    restore_attention: torch.Tensor  # [N_rqk + N_rv, R, D]
    feature_knowledge: torch.Tensor  # [N_fk, D, Rk]
    restore_knowledge: torch.Tensor  # [N_rk, Rk, D]
    neuron_embeddings: torch.Tensor  # [N_total, Ds], rows L2-normalised
    attention_route_tables: tuple  # per `route_groups` group of the attention routes: [G, N, Ds] pool rows
    knowledge_route_tables: tuple  # the same for the knowledge routes
    attention_proj_weight: torch.Tensor  # [6 * Ds, D]
    attention_proj_bias: torch.Tensor  # [6 * Ds]
    feature_know_proj_weight: torch.Tensor  # [Ds, D]
    feature_know_proj_bias: torch.Tensor  # [Ds]
    restore_know_proj_weight: torch.Tensor  # [Ds, D]
    restore_know_proj_bias: torch.Tensor  # [Ds]


class SharedLinear(nn.Module):
    """The weight [out, in] and bias [out] of a linear map that layers apply themselves (F.linear).

    Not an `nn.Linear`: its `forward()` hands out the tensors, so device-placement hooks fire when the model
    collects the shared weights, not when a layer would call it.
    """

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.empty(out_features))

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        return _view(self.weight), _view(self.bias)


class DawnNeuronPools(nn.Module):
    """The low-rank neurons: feature neurons compress D -> R, restore neurons expand R -> D."""

    def __init__(self, config):
        super().__init__()
        d, r, rk = config.hidden_size, config.attention_rank, config.knowledge_rank
        self.feature_attention = nn.Parameter(torch.empty(config.n_feature_qk + config.n_feature_v, d, r))
        self.restore_attention = nn.Parameter(torch.empty(config.n_restore_qk + config.n_restore_v, r, d))
        self.feature_knowledge = nn.Parameter(torch.empty(config.n_feature_know, d, rk))
        self.restore_knowledge = nn.Parameter(torch.empty(config.n_restore_know, rk, d))

    def forward(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        # views, not the Parameters themselves: an offloading hook swaps the Parameters' storage back to "meta"
        # after this forward, and the views must keep the loaded values for the layers
        return tuple(_view(p) for p in (
            self.feature_attention, self.restore_attention, self.feature_knowledge, self.restore_knowledge,
        ))


class DawnRouter(nn.Module):
    """Neuron embeddings, the routing projections and the usage statistics of the eight routes."""

    def __init__(self, config):
        super().__init__()
        d, ds = config.hidden_size, config.router_dim
        self.neuron_embeddings = nn.Parameter(torch.empty(config.total_neurons, ds))
        # feature-Q, feature-K, feature-V, restore-Q, restore-K, restore-V along the output (spec §2)
        self.attention_proj = SharedLinear(d, 6 * ds)
        self.feature_know_proj = SharedLinear(d, ds)
        self.restore_know_proj = SharedLinear(d, ds)
        slices = pool_slices(config)
        for route in ROUTES:
            size = slices[route.pool].stop - slices[route.pool].start
            self.register_buffer(f"usage_ema_{route.name}", torch.zeros(size))
        self.usage_ema_decay = config.usage_ema_decay
        # embedding-table rows of each group of routes decided together (plain tensors, derived from the config)
        self._group_rows = {
            "attention": [group.rows for group in route_groups(config, ATTENTION_ROUTES)],
            "knowledge": [group.rows for group in route_groups(config, KNOWLEDGE_ROUTES)],
        }

    def _route_tables(self, normalised: torch.Tensor, circuit: str) -> tuple:
        rows = self._group_rows[circuit]
        if rows[0].device != normalised.device:
            rows = self._group_rows[circuit] = [r.to(normalised.device) for r in rows]
        return tuple(normalised[r] for r in rows)  # [G, N, Ds] per group

    def forward(self) -> tuple:
        """(normalised embeddings [N_total, Ds], attention route tables, knowledge route tables (a [G, N, Ds]
        tensor per group of routes decided together), then the projections' weights and biases). The tables are
        gathered once per model forward, not once per layer."""
        normalised = F.normalize(self.neuron_embeddings, dim=-1)
        return (
            normalised, self._route_tables(normalised, "attention"), self._route_tables(normalised, "knowledge"),
            *self.attention_proj(), *self.feature_know_proj(), *self.restore_know_proj(),
        )

    def usage(self) -> dict:
        """Route name -> usage EMA [N] (a view of the buffer)."""
        return {route.name: getattr(self, f"usage_ema_{route.name}") for route in ROUTES}

    @torch.no_grad()
    def update_usage(self, selection_fractions: dict) -> None:
        """ema <- decay * ema + (1 - decay) * fraction of valid tokens selecting each neuron (training only)."""
        for name, fraction in selection_fractions.items():
            buf = getattr(self, f"usage_ema_{name}")
            if buf.is_meta:  # offloaded by accelerate: there is nothing to update in place
                continue
            buf.mul_(self.usage_ema_decay).add_(fraction.to(buf), alpha=1.0 - self.usage_ema_decay)


__all__ = ["SharedTensors", "SharedLinear", "DawnNeuronPools", "DawnRouter"]
