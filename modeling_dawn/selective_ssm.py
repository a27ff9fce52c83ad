"""The global selective SSM that scores token importance for cumulative routing (spec §4).

It runs once over the embeddings u = x (before layer 1), with a diagonal state matrix:

    delta = softplus(u W_delta^T) [B,S,D];  Bt = u W_B^T, Ct = u W_C^T [B,S,Ns];  A = -exp(A_log) [D,Ns]
    h_t = exp(delta_t (x) A) * h_{t-1} + (delta_t * u_t) (x) Bt_t ;  y_t = h_t . Ct_t   (no skip, no gate)
    y' = LN(y);  score_t = <u_t, W_imp y'_t> / temperature;  context = (y' W_ctx^T) * context_scale

Padded positions get delta = 0, so they neither decay nor feed the state: left padding leaves h untouched.
"""

import torch
import torch.nn.functional as F
from torch import nn


def selective_scan(
    decay_log: torch.Tensor, inputs: torch.Tensor, c: torch.Tensor, state: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """h_t = exp(decay_log_t) * h_{t-1} + inputs_t ;  y_t = sum_n h_t[..., n] * c_t[n].

    decay_log: [B, S, D, Ns] (<= 0), inputs: [B, S, D, Ns], c: [B, S, Ns], state: [B, D, Ns] or None.
    Returns (y [B, S, D], final state [B, D, Ns]). Sequential reference recurrence over positions.
    """
    batch, seq, dim, ns = inputs.shape
    h = inputs.new_zeros(batch, dim, ns) if state is None else state.to(inputs.dtype)
    ys = []
    for t in range(seq):
        h = torch.exp(decay_log[:, t]) * h + inputs[:, t]
        ys.append(torch.einsum("bdn,bn->bd", h, c[:, t]))
    return torch.stack(ys, dim=1), h


class DawnSelectiveSSM(nn.Module):
    """Importance scores [B, S] and optional routing context [B, S, D] from the embeddings."""

    def __init__(self, config):
        super().__init__()
        d, ns = config.hidden_size, config.state_dim
        self.temperature = config.importance_temperature
        self.A_log = nn.Parameter(torch.empty(d, ns))
        self.context_scale = nn.Parameter(torch.empty(()))
        self.delta_proj = nn.Linear(d, d, bias=False)
        self.B_proj = nn.Linear(d, ns, bias=False)
        self.C_proj = nn.Linear(d, ns, bias=False)
        self.norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.context_proj = nn.Linear(d, d, bias=False)
        self.importance_proj = nn.Linear(d, d, bias=False)

    def forward(
        self, u: torch.Tensor, valid: torch.Tensor, state: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """u: [B, S, D], valid: [B, S] bool -> (scores [B, S], context [B, S, D], final state [B, D, Ns])."""
        delta = F.softplus(self.delta_proj(u)) * valid.unsqueeze(-1).to(u.dtype)  # [B, S, D]
        b, c = self.B_proj(u), self.C_proj(u)  # [B, S, Ns]
        a = -torch.exp(self.A_log.float())  # [D, Ns]
        decay_log = delta.float().unsqueeze(-1) * a  # [B, S, D, Ns]
        inputs = (delta * u).float().unsqueeze(-1) * b.float().unsqueeze(-2)  # [B, S, D, Ns]
        y, new_state = selective_scan(decay_log, inputs, c.float(), state)
        y = self.norm(y.to(u.dtype))
        scores = (u * self.importance_proj(y)).sum(-1) / self.temperature  # [B, S]
        context = self.context_proj(y) * self.context_scale * valid.unsqueeze(-1).to(u.dtype)
        return scores, context, new_state


__all__ = ["DawnSelectiveSSM", "selective_scan"]
