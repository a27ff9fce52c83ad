"""Composing a token's map from its chosen neurons: y_t = sum_j w_tj (x_t @ pool[i_tj])  (spec §3).

Two exact implementations of the same function:

* `compose_dense` builds each token's composed matrix sum_n w_tn pool[n] ([T, Din, Dout]), as the research code
  does. Obviously right, ~8x the FLOPs of a vanilla Transformer; kept for tests and debugging.
* `compose_sparse` touches only the k chosen neurons: it sorts the (token, neuron) pairs by neuron and runs one
  matrix multiply per neuron group (a grouped GEMM), then scatters the weighted rows back to their tokens.
"""

import torch


def compose_dense(x: torch.Tensor, pool: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """x: [T, Din], pool: [N, Din, Dout], indices/weights: [T, k] -> [T, Dout]."""
    dense = x.new_zeros(x.shape[0], pool.shape[0]).scatter_add(1, indices, weights.to(x.dtype))  # [T, N]
    composed = torch.einsum("tn,nio->tio", dense, pool)  # [T, Din, Dout]
    return torch.bmm(x.unsqueeze(1), composed).squeeze(1)


def _grouped_matmul_loop(rows: torch.Tensor, pool: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """rows: [M, Din] sorted by group, pool: [N, Din, Dout], counts: [N] -> [M, Dout]; one matmul per group."""
    chunks = rows.split(counts.tolist())
    return torch.cat([chunk @ pool[g] for g, chunk in enumerate(chunks) if chunk.shape[0]], dim=0)


def compose_sparse(x: torch.Tensor, pool: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """x: [T, Din], pool: [N, Din, Dout], indices/weights: [T, k] -> [T, Dout]; cost T*k*Din*Dout."""
    num_tokens, k = indices.shape
    flat = indices.reshape(-1)  # [T*k]
    order = flat.argsort(stable=True)  # pairs sorted by neuron
    token_of_pair = order // k  # [T*k]
    counts = torch.bincount(flat, minlength=pool.shape[0])  # [N]
    rows = x.index_select(0, token_of_pair)  # [T*k, Din]
    out_rows = _grouped_matmul_loop(rows, pool, counts)  # [T*k, Dout]
    out_rows = out_rows * weights.reshape(-1, 1)[order].to(out_rows.dtype)
    return out_rows.new_zeros(num_tokens, pool.shape[-1]).index_add_(0, token_of_pair, out_rows)


COMPOSITION_FUNCTIONS = {"sparse": compose_sparse, "dense": compose_dense}


def compose(x: torch.Tensor, pool: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor, impl: str = "sparse"):
    """x: [..., Din], indices/weights: [..., k] -> [..., Dout] with the chosen implementation."""
    lead = x.shape[:-1]
    out = COMPOSITION_FUNCTIONS[impl](
        x.reshape(-1, x.shape[-1]), pool, indices.reshape(-1, indices.shape[-1]), weights.reshape(-1, weights.shape[-1])
    )
    return out.reshape(*lead, pool.shape[-1])


__all__ = ["compose", "compose_dense", "compose_sparse", "COMPOSITION_FUNCTIONS"]
