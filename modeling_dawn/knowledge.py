"""The knowledge circuit (DAWN's FFN): z -> z @ sum_n w_n A[n] -> @ sum_m w_m C[m], with no activation."""

import torch
from torch import nn

from .neuron_composition import compose


class DawnKnowledge(nn.Module):
    """Stateless: the knowledge neurons are global and arrive as tensors; linear given the routing (spec §3)."""

    def __init__(self, config):
        super().__init__()
        self.impl = config.neuron_composition

    def forward(self, z: torch.Tensor, feature: torch.Tensor, restore: torch.Tensor, choices: dict) -> torch.Tensor:
        """z: [B, S, D], feature: [N_fk, D, Rk], restore: [N_rk, Rk, D] -> [B, S, D]."""
        h = compose(z, feature, *choices["feature_know"], impl=self.impl)  # [B, S, Rk]
        return compose(h, restore, *choices["restore_know"], impl=self.impl)


__all__ = ["DawnKnowledge"]
