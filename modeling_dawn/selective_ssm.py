"""The global selective SSM that scores token importance for cumulative routing (spec §4).

It runs once over the embeddings u = x (before layer 1), with a diagonal state matrix:

    delta = softplus(u W_delta^T) [B,S,D];  Bt = u W_B^T, Ct = u W_C^T [B,S,Ns];  A = -exp(A_log) [D,Ns]
    h_t = exp(delta_t (x) A) * h_{t-1} + (delta_t * u_t) (x) Bt_t ;  y_t = h_t . Ct_t   (no skip, no gate)
    y' = LN(y);  score_t = <u_t, W_imp y'_t> / temperature;  context = (y' W_ctx^T) * context_scale

Padded positions get delta = 0, so they neither decay nor feed the state: left padding leaves h untouched.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn


def selective_scan_reference(
    decay_log: torch.Tensor, inputs: torch.Tensor, c: torch.Tensor, state: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """h_t = exp(decay_log_t) * h_{t-1} + inputs_t ;  y_t = sum_n h_t[..., n] * c_t[n].

    decay_log: [B, S, D, Ns] (<= 0), inputs: [B, S, D, Ns], c: [B, S, Ns], state: [B, D, Ns] or None.
    Returns (y [B, S, D], final state [B, D, Ns]). The sequential recurrence, one step per position (tests).
    """
    batch, seq, dim, ns = inputs.shape
    h = inputs.new_zeros(batch, dim, ns) if state is None else state.to(inputs.dtype)
    ys = []
    for t in range(seq):
        h = torch.exp(decay_log[:, t]) * h + inputs[:, t]
        ys.append(torch.einsum("bdn,bn->bd", h, c[:, t]))
    return torch.stack(ys, dim=1), h


def selective_scan(
    decay_log: torch.Tensor,
    inputs: torch.Tensor,
    c: torch.Tensor,
    state: torch.Tensor | None = None,
    chunk: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The recurrence of `selective_scan_reference`, as a two-level chunked scan (same signature and result).

    The S positions are cut into S/L chunks of L (default ceil(sqrt(S))):
    1. inside every chunk, all chunks at once, the recurrence from a zero state: local states h_loc[c, l] and the
       decay products P[c, l] = prod_{l' <= l} a[c, l'] (L vectorised steps over [B, S/L, D, Ns]);
    2. across chunks, the state entering each chunk: H_c = P[c, L-1] * H_{c-1} + h_loc[c, L-1] (S/L steps over
       [B, D, Ns], starting from `state`);
    3. h[c, l] = h_loc[c, l] + P[c, l] * H_{c-1}, all at once; y_t = h_t . c_t.
    That is ~2 sqrt(S) sequential steps instead of S. Only products of decays (each in (0, 1]) and sums appear, no
    division or exp of a positive cumulative sum, so it is as stable as the sequential loop and equal to it up to
    floating-point reassociation. The tail of the last chunk is padded with decay 1 and input 0.
    """
    batch, seq, dim, ns = inputs.shape
    h0 = inputs.new_zeros(batch, dim, ns) if state is None else state.to(inputs.dtype)
    if seq == 0:
        return inputs.new_zeros(batch, 0, dim), h0
    length = chunk or max(1, math.ceil(math.sqrt(seq)))
    n_chunks = math.ceil(seq / length)
    pad = n_chunks * length - seq
    decay = torch.exp(decay_log)
    if pad:
        decay = F.pad(decay, (0, 0, 0, 0, 0, pad), value=1.0)
        inputs = F.pad(inputs, (0, 0, 0, 0, 0, pad), value=0.0)
    decay = decay.view(batch, n_chunks, length, dim, ns)
    inputs = inputs.view(batch, n_chunks, length, dim, ns)

    # 1. local scans inside every chunk (all chunks together). `unbind` rather than indexing step by step: the
    #    backward of one unbind is one stack, while each indexing op would allocate a zero-filled full-size grad.
    decays, steps = decay.unbind(2), inputs.unbind(2)  # L x [B, C, D, Ns]
    h, p = steps[0], decays[0]
    local, prods = [h], [p]
    for a, x in zip(decays[1:], steps[1:]):
        h = a * h + x
        p = p * a
        local.append(h)
        prods.append(p)

    # 2. the state entering each chunk
    carry, entering = h0, []
    for chunk_decay, chunk_last in zip(p.unbind(1), h.unbind(1)):  # decay product / local state at chunk ends
        entering.append(carry)
        carry = chunk_decay * carry + chunk_last
    entering = torch.stack(entering, dim=1)  # [B, C, D, Ns]
    local = torch.stack(local, dim=2)  # [B, C, L, D, Ns]
    prods = torch.stack(prods, dim=2)

    # 3. every position's state, then the readout
    states = (local + prods * entering.unsqueeze(2)).view(batch, n_chunks * length, dim, ns)[:, :seq]
    y = torch.einsum("bsdn,bsn->bsd", states, c)
    return y, states[:, -1]


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
        dtype = torch.promote_types(u.dtype, torch.float32)  # the scan runs in fp32 at least (bf16 models too)
        a = -torch.exp(self.A_log.to(dtype))  # [D, Ns]
        decay_log = delta.to(dtype).unsqueeze(-1) * a  # [B, S, D, Ns]
        inputs = (delta * u).to(dtype).unsqueeze(-1) * b.to(dtype).unsqueeze(-2)  # [B, S, D, Ns]
        y, new_state = selective_scan(decay_log, inputs, c.to(dtype), state)
        y = self.norm(y.to(u.dtype))
        scores = (u * self.importance_proj(y)).sum(-1) / self.temperature  # [B, S]
        context = self.context_proj(y) * self.context_scale * valid.unsqueeze(-1).to(u.dtype)
        return scores, context, new_state


__all__ = ["DawnSelectiveSSM", "selective_scan", "selective_scan_reference"]
