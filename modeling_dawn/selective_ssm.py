"""The global selective SSM that scores token importance for cumulative routing (spec §4).

It runs once over the embeddings u = x (before layer 1), with a diagonal state matrix:

    delta = softplus(u W_delta^T) [B,S,D];  Bt = u W_B^T, Ct = u W_C^T [B,S,Ns];  A = -exp(A_log) [D,Ns]
    h_t = exp(delta_t (x) A) * h_{t-1} + (delta_t * u_t) (x) Bt_t ;  y_t = h_t . Ct_t   (no skip, no gate)
    y' = LN(y);  score_t = <u_t, W_imp y'_t> / temperature;  context = (y' W_ctx^T) * context_scale

Padded positions get delta = 0, so they neither decay nor feed the state: left padding leaves h untouched.

Two exact ways to run the recurrence, picked by device (`scan_ssm`):
* `recurrent_scan` (CPU): the work-optimal loop over positions on [B, D, Ns] states that stay in cache, from the
  factored inputs (delta [B,S,D], A, delta*u, Bt, Ct), with a hand-written backward (the reverse recurrence,
  states recomputed chunk by chunk from sqrt(S) checkpoints). It never materialises a [B, S, D, Ns] tensor.
* `selective_scan` (CUDA): a chunked scan with ~2 sqrt(S) sequential steps over materialised [B, S, D, Ns]
  tensors, for devices where each small step costs a kernel launch and bandwidth is plentiful.
`selective_scan_reference` is the plain loop the tests hold both to.
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
    if seq == 0:
        return inputs.new_zeros(batch, 0, dim), h
    ys = []
    for decay_log_t, inputs_t, c_t in zip(decay_log.unbind(1), inputs.unbind(1), c.unbind(1)):
        h = torch.exp(decay_log_t) * h + inputs_t
        ys.append(torch.einsum("bdn,bn->bd", h, c_t))
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


class _RecurrentScan(torch.autograd.Function):
    """h_t = exp(delta_t (x) a) * h_{t-1} + du_t (x) b_t ;  y_t = h_t c_t, forward and backward as loops over t.

    delta, du: [B, S, D]; a: [D, Ns]; b, c: [B, S, Ns]; h0: [B, D, Ns] -> (y [B, S, D], h_S [B, D, Ns]).
    Saves the state every `chunk` positions only; the backward recomputes each chunk's states from its checkpoint
    and runs the reverse recurrence g_{t-1} = exp(delta_t a) * g_t (g = dL/dh), so memory is O(sqrt(S)) states.
    Contractions over Ns with one output column are written as multiply + sum: on CPU a [B, D, Ns] @ [B, Ns, 1]
    bmm takes ~3x as long. The floor is exp(delta_t a) itself (B*S*D*Ns exponentials, twice with the backward).
    """

    @staticmethod
    def _steps(delta, a, du, b, h, start, stop):
        """States h_start..h_{stop-1} and decays from h_{start-1} = h. Yields (decay_t, h_t)."""
        for t in range(start, stop):
            decay = torch.exp(delta[:, t, :, None] * a)  # [B, D, Ns]
            h = torch.addcmul(decay * h, du[:, t, :, None], b[:, t, None, :])
            yield decay, h

    @staticmethod
    def forward(ctx, delta, a, du, b, c, h0):
        seq = delta.shape[1]
        chunk = max(1, math.ceil(math.sqrt(seq)))
        checkpoints, ys, h = [], [], h0
        for t0 in range(0, seq, chunk):
            checkpoints.append(h)
            for t, (_, h) in enumerate(_RecurrentScan._steps(delta, a, du, b, h, t0, min(t0 + chunk, seq)), t0):
                ys.append((h * c[:, t, None, :]).sum(-1))  # [B, D]
        ctx.chunk = chunk
        ctx.save_for_backward(delta, a, du, b, c, *checkpoints)
        return torch.stack(ys, dim=1), h

    @staticmethod
    def backward(ctx, grad_y, grad_h):
        delta, a, du, b, c, *checkpoints = ctx.saved_tensors
        seq, chunk = delta.shape[1], ctx.chunk
        grad_y = torch.zeros_like(du) if grad_y is None else grad_y
        g = torch.zeros_like(checkpoints[0]) if grad_h is None else grad_h.clone()  # dL/dh_t, [B, D, Ns]
        d_delta, d_du, d_b, d_c = [None] * seq, [None] * seq, [None] * seq, [None] * seq
        d_a = torch.zeros_like(g)  # sum over t of (dL/d log-decay_t) * delta_t, reduced over the batch at the end
        for i in reversed(range(len(checkpoints))):
            t0 = i * chunk
            stop = min(t0 + chunk, seq)
            steps = list(_RecurrentScan._steps(delta, a, du, b, checkpoints[i], t0, stop))
            for t in reversed(range(t0, stop)):
                decay, h = steps[t - t0]
                h_prev = steps[t - t0 - 1][1] if t > t0 else checkpoints[i]
                dy = grad_y[:, t]  # [B, D]
                d_c[t] = torch.bmm(dy[:, None, :], h).squeeze(1)  # [B, Ns]
                g = torch.addcmul(g, dy[:, :, None], c[:, t, None, :])  # + dy_t (x) c_t
                d_du[t] = (g * b[:, t, None, :]).sum(-1)  # [B, D]
                d_b[t] = torch.bmm(du[:, t, None, :], g).squeeze(1)  # [B, Ns]
                g = g * decay  # now dL/dh_{t-1} through this step
                grad_log_decay = g * h_prev  # dL/d(delta_t a), [B, D, Ns]
                d_delta[t] = (grad_log_decay * a).sum(-1)  # [B, D]
                d_a.addcmul_(grad_log_decay, delta[:, t, :, None])
        return (torch.stack(d_delta, 1), d_a.sum(0), torch.stack(d_du, 1), torch.stack(d_b, 1),
                torch.stack(d_c, 1), g)


def recurrent_scan(
    delta: torch.Tensor, a: torch.Tensor, du: torch.Tensor, b: torch.Tensor, c: torch.Tensor,
    state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The SSM recurrence from its factors, without [B, S, D, Ns] tensors (see `_RecurrentScan`).

    delta, du: [B, S, D]; a: [D, Ns] (<= 0); b, c: [B, S, Ns]; state: [B, D, Ns] or None.
    Same result as `selective_scan_reference(delta[..., None] * a, du[..., None] * b[:, :, None], c, state)`.
    """
    batch, seq, dim = du.shape
    h0 = du.new_zeros(batch, dim, a.shape[-1]) if state is None else state.to(du.dtype)
    if seq == 0:
        return du.new_zeros(batch, 0, dim), h0
    return _RecurrentScan.apply(delta, a, du, b, c, h0)


def scan_path(device: torch.device) -> str:
    """Which scan `scan_ssm` runs on `device`: "chunked" on CUDA (few sequential steps, each a kernel launch on
    plentiful bandwidth), "recurrent" elsewhere (on CPU the chunked scan is bandwidth-bound and several times
    slower than even the plain loop; figures in docs/benchmarks.md)."""
    return "chunked" if torch.device(device).type == "cuda" else "recurrent"


def scan_ssm(
    delta: torch.Tensor, a: torch.Tensor, du: torch.Tensor, b: torch.Tensor, c: torch.Tensor,
    state: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The recurrence on the path for the device (`scan_path`), from its factors (see `recurrent_scan`)."""
    if scan_path(du.device) == "chunked":
        return selective_scan(delta.unsqueeze(-1) * a, du.unsqueeze(-1) * b.unsqueeze(-2), c, state)
    return recurrent_scan(delta, a, du, b, c, state)


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
        y, new_state = scan_ssm(delta.to(dtype), a, (delta * u).to(dtype), b.to(dtype), c.to(dtype), state)
        y = self.norm(y.to(u.dtype))
        scores = (u * self.importance_proj(y)).sum(-1) / self.temperature  # [B, S]
        context = self.context_proj(y) * self.context_scale * valid.unsqueeze(-1).to(u.dtype)
        return scores, context, new_state


__all__ = [
    "DawnSelectiveSSM", "recurrent_scan", "scan_path", "scan_ssm", "selective_scan", "selective_scan_reference",
]
