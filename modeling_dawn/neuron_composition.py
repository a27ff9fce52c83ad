"""Composing a token's map from its chosen neurons: y_t = sum_j w_tj (x_t @ pool[i_tj])  (spec §3).

Two exact implementations of the same function:

* `compose_dense` builds each token's composed matrix sum_n w_tn pool[n] ([T, Din, Dout]), as the research code
  does. Obviously right, ~8x the FLOPs of a vanilla Transformer; kept as the reference for tests and debugging.
* `compose_sparse` touches only the k chosen neurons (cost T*k*Din*Dout, the same as the dense reference's
  arithmetic restricted to non-zero routing weights). It never materialises per-token [T, Din, Dout] matrices:

  1. the T*k (token, neuron) pairs are sorted by neuron (`sort(stable=True)`), and group boundaries come from
     `searchsorted` on the sorted neuron ids (no host synchronisation);
  2. the input rows of the pairs are gathered ([T*k, Din]) and multiplied by their neuron in one grouped GEMM
     (`torch._grouped_mm`, 2-D x 3-D with group offsets), the routing weight scaling the narrower side;
  3. the product rows are summed into their output rows with `index_add_` (each output row receives k rows).
  On CPU, steps 2-3 run over consecutive ranges of neurons whose temporaries stay under `CHUNK_BYTES`.

  It is a custom `torch.autograd.Function` (`_SparseCompose`): the backward pass reuses the forward's plan,
  computing grad x with a grouped GEMM against the transposed pool, grad pool with the 2-D x 2-D grouped GEMM
  (per-group weight gradients, offsets along the reduction dimension) and grad weights as row dot products. It
  saves x, the pool, the weights and the plan (a few int64 per pair), so its activation memory is about that of
  a dense linear layer on x (the gathered [T*k, Din] rows are recomputed in backward rather than stored).
  `torch._grouped_mm`'s own autograd backward does not run on CPU in torch 2.13, which is why the Function is
  written out here.

  Where `torch._grouped_mm` is missing (older torch) or does not support the dtype / device (e.g. float64, which
  the tests use), the same plan runs with a loop of one matmul per neuron (`_grouped_matmul_loop`,
  `_grouped_weight_grad_loop`); that fallback reads the group sizes on the host.

  For a handful of pairs (a decoding step: pairs <= N), each token's composed matrix is summed from its k neurons
  with `embedding_bag` and applied as a matrix-vector product (`_compose_few`): the grouped GEMM would walk all
  N, mostly empty, groups.

  Several index sets may share one input and one pool (Q and K route over the same feature pool from the same
  normalised hidden state): `compose_sparse` accepts indices/weights [G, T, k] with x [T, Din] and returns
  [G, T, Dout] from one sort and one grouped GEMM.

Under autocast (CUDA bf16, CPU bf16), x and the pool are cast to the autocast dtype before the sparse path, as a
`nn.Linear` would be; the routing weights follow x's dtype.
"""

import torch
import torch.nn.functional as F

_HAS_GROUPED_MM = hasattr(torch, "_grouped_mm")
# (device type, dtype) pairs where torch._grouped_mm raised once; they use the loop fallback from then on.
_GROUPED_MM_UNSUPPORTED: set = set()


def compose_dense(x: torch.Tensor, pool: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """x: [T, Din], pool: [N, Din, Dout], indices/weights: [T, k] -> [T, Dout]."""
    dense = x.new_zeros(x.shape[0], pool.shape[0]).scatter_add(1, indices, weights.to(x.dtype))  # [T, N]
    composed = torch.einsum("tn,nio->tio", dense, pool)  # [T, Din, Dout]
    return torch.bmm(x.unsqueeze(1), composed).squeeze(1)


# ---------------------------------------------------------------------------------------------- grouped GEMMs


def _grouped_matmul_loop(rows: torch.Tensor, pool: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """rows: [M, Din] sorted by group, pool: [N, Din, Dout], counts: [N] -> [M, Dout]; one matmul per group."""
    chunks = rows.split(counts.tolist())
    out = [chunk @ pool[g] for g, chunk in enumerate(chunks) if chunk.shape[0]]
    return torch.cat(out, dim=0) if out else rows.new_zeros(0, pool.shape[-1])


def _grouped_weight_grad_loop(rows: torch.Tensor, grads: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """rows: [M, Din], grads: [M, Dout] sorted by group, counts: [N] -> [N, Din, Dout] = per group rows^T @ grads."""
    sizes = counts.tolist()
    out = rows.new_zeros(len(sizes), rows.shape[1], grads.shape[1])
    start = 0
    for g, size in enumerate(sizes):
        if size:
            out[g] = rows[start:start + size].transpose(0, 1) @ grads[start:start + size]
        start += size
    return out


def _use_grouped_mm(a: torch.Tensor, b: torch.Tensor) -> bool:
    """torch._grouped_mm needs float32/bf16/fp16 and 16-byte aligned strides (dims a multiple of 16 bytes)."""
    if not _HAS_GROUPED_MM or a.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        return False
    if any((size * a.element_size()) % 16 for size in (a.shape[-1], *b.shape[-2:])):
        return False
    return (a.device.type, a.dtype) not in _GROUPED_MM_UNSUPPORTED


def grouped_matmul(rows: torch.Tensor, pool: torch.Tensor, offsets: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Group g of rows (rows offsets[g-1]:offsets[g]) times pool[g]: rows [M, Din], pool [N, Din, Dout] -> [M, Dout].

    offsets: [N] int32 cumulative group ends (device tensor); counts: [N] group sizes (for the fallback only).
    """
    if _use_grouped_mm(rows, pool):
        try:
            return torch._grouped_mm(rows, pool, offs=offsets)
        except (RuntimeError, NotImplementedError):
            _GROUPED_MM_UNSUPPORTED.add((rows.device.type, rows.dtype))
    return _grouped_matmul_loop(rows, pool, counts)


def grouped_weight_grad(rows: torch.Tensor, grads: torch.Tensor, offsets: torch.Tensor, counts: torch.Tensor):
    """Per group rows_g^T @ grads_g: rows [M, Din], grads [M, Dout] -> [N, Din, Dout] (empty groups give 0)."""
    if _use_grouped_mm(rows, grads):
        try:
            return torch._grouped_mm(rows.transpose(0, 1), grads, offs=offsets)
        except (RuntimeError, NotImplementedError):
            _GROUPED_MM_UNSUPPORTED.add((rows.device.type, rows.dtype))
    return _grouped_weight_grad_loop(rows, grads, counts)


# ---------------------------------------------------------------------------------------------- sparse path


# Largest temporary [pairs, max(Din, Dout)] buffer, in bytes, that one step of the sparse path allocates. glibc
# serves allocations up to 32 MiB from its heap once warmed up, and maps larger ones afresh (page faults on every
# touch): on CPU, staying below that is worth several-fold on the gathers. Overridable for experiments.
CHUNK_BYTES = 24 * 2**20


def _plan(indices: torch.Tensor, num_neurons: int, num_tokens: int):
    """indices: [G*T, k] -> (order [M], row of x of each sorted pair [M], output row (g*T + t) of each sorted pair
    [M], ends [N] cumulative group ends (int64)), M = G*T*k.

    `order` sorts the pairs by neuron (stable), without host synchronisation.
    """
    k = indices.shape[-1]
    flat = indices.reshape(-1)
    sorted_ids, order = torch.sort(flat, stable=True)
    bounds = torch.arange(num_neurons, device=flat.device, dtype=sorted_ids.dtype)
    ends = torch.searchsorted(sorted_ids, bounds, right=True)  # [N]
    out_row = torch.div(order, k, rounding_mode="floor")
    x_row = out_row % num_tokens
    return order, x_row, out_row, ends


def _neuron_ranges(ends: torch.Tensor, width: int, element_size: int) -> list:
    """Split the neurons into consecutive ranges [(g0, g1, p0, p1)] (pairs p0:p1 of the sorted order) whose
    [pairs, width] temporaries stay under CHUNK_BYTES, on CPU (reads the group ends on the host, which costs
    nothing there); accelerators get one range. Splitting by neuron rather than by token keeps every neuron's rows
    in one GEMM (bigger, faster groups) and makes each range's pool gradient final (no accumulation)."""
    n = ends.shape[0]
    if ends.device.type != "cpu":
        return [(0, n, 0, None)]
    budget = max(1, CHUNK_BYTES // max(1, width * element_size))
    ends_list = ends.tolist()
    ranges, g0, p0 = [], 0, 0
    for g in range(1, n):
        if ends_list[g] - p0 > budget:  # neuron g would overflow the range [g0, g): close it
            ranges.append((g0, g, p0, ends_list[g - 1]))
            g0, p0 = g, ends_list[g - 1]
    ranges.append((g0, n, p0, ends_list[-1]))
    return ranges


class _SparseCompose(torch.autograd.Function):
    """y[g, t] = sum_j w[g, t, j] * (x[t] @ pool[i[g, t, j]]) with x [T, Din], pool [N, Din, Dout], i/w [G, T, k].

    The routing weight multiplies whichever side of the grouped GEMM is narrower; the weighted product rows are
    summed into their output rows with `index_add_` (each output row receives exactly k rows). One sort plans both
    passes; on CPU the work runs over ranges of neurons (`_neuron_ranges`, `CHUNK_BYTES`).
    """

    @staticmethod
    def forward(ctx, x, pool, indices, weights):
        groups, num_tokens, k = indices.shape
        n, din, dout = pool.shape
        order, x_row, out_row, ends = _plan(indices.reshape(-1, k), n, num_tokens)
        w_sorted = weights.reshape(-1).to(x.dtype).index_select(0, order).unsqueeze(-1)  # [M, 1]
        counts = torch.diff(ends, prepend=ends.new_zeros(1))
        ranges = _neuron_ranges(ends, max(din, dout), x.element_size())
        out = x.new_zeros(groups * num_tokens, dout)
        for g0, g1, p0, p1 in ranges:
            if p0 == p1:
                continue
            offsets = (ends[g0:g1] - p0).to(torch.int32)
            rows = x.index_select(0, x_row[p0:p1])  # [m, Din]
            if din <= dout:
                prod = grouped_matmul(rows.mul_(w_sorted[p0:p1]), pool[g0:g1], offsets, counts[g0:g1])  # weighted
            else:
                prod = grouped_matmul(rows, pool[g0:g1], offsets, counts[g0:g1]).mul_(w_sorted[p0:p1])
            del rows
            out.index_add_(0, out_row[p0:p1], prod)
        ctx.ranges = ranges
        ctx.save_for_backward(x, pool, weights, order, x_row, out_row, ends, w_sorted)
        return out.view(groups, num_tokens, dout)

    @staticmethod
    def backward(ctx, grad_out):
        x, pool, weights, order, x_row, out_row, ends, w_sorted = ctx.saved_tensors
        n, din, dout = pool.shape
        need_x, need_pool, _, need_w = ctx.needs_input_grad
        grad_out = grad_out.to(x.dtype).reshape(-1, dout)
        counts = torch.diff(ends, prepend=ends.new_zeros(1))
        grad_x = x.new_zeros(x.shape) if need_x else None
        grad_w = x.new_empty(weights.numel()) if need_w else None  # flat, in (g, t, j) order
        grad_pool = pool.new_empty(pool.shape, dtype=x.dtype) if need_pool else None
        pool_t = pool.transpose(1, 2)
        for g0, g1, p0, p1 in ctx.ranges:
            if p0 == p1:
                if need_pool:
                    grad_pool[g0:g1] = 0
                continue
            offsets = (ends[g0:g1] - p0).to(torch.int32)
            ws = w_sorted[p0:p1]
            gy_rows = grad_out.index_select(0, out_row[p0:p1])  # [m, Dout], neuron order
            rows = x.index_select(0, x_row[p0:p1]) if (need_pool or need_w) else None  # recomputed gather [m, Din]
            if need_x or need_w:
                g_rows = grouped_matmul(gy_rows, pool_t[g0:g1], offsets, counts[g0:g1])  # [m, Din], unweighted
                if need_w:
                    grad_w.index_copy_(0, order[p0:p1], torch.einsum("md,md->m", g_rows, rows))
                if need_x:
                    grad_x.index_add_(0, x_row[p0:p1], g_rows.mul_(ws))
                del g_rows
            if need_pool:
                if din <= dout:
                    grad_pool[g0:g1] = grouped_weight_grad(rows.mul_(ws), gy_rows, offsets, counts[g0:g1])
                else:
                    grad_pool[g0:g1] = grouped_weight_grad(rows, gy_rows.mul_(ws), offsets, counts[g0:g1])
        if grad_pool is not None:
            grad_pool = grad_pool.to(pool.dtype)
        if grad_w is not None:
            grad_w = grad_w.view(weights.shape).to(weights.dtype)
        return grad_x, grad_pool, None, grad_w


def _compose_few(x: torch.Tensor, pool: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor):
    """x: [T, Din], pool: [N, Din, Dout], indices/weights: [G, T, k] -> [G, T, Dout] for a handful of pairs
    (decoding steps): each token's composed matrix sum_j w_j pool[i_j] ([G, T, Din, Dout]) is summed by
    `embedding_bag` straight from the k chosen neurons (no copy of them), then applied with one batched
    matrix-vector product. Reads G*T*k neurons, like the grouped GEMM, without walking all N mostly empty groups."""
    groups, num_tokens, k = indices.shape
    n, din, dout = pool.shape
    composed = F.embedding_bag(
        indices.reshape(-1, k), pool.reshape(n, din * dout), per_sample_weights=weights.reshape(-1, k).to(pool.dtype),
        mode="sum",
    ).view(groups, num_tokens, din, dout)
    return torch.matmul(x[None, :, None, :], composed).squeeze(-2)


# The few-pairs path is used while pairs <= FEW_PAIRS_FRACTION * N (measured on CPU with DAWN-39M's pools: it
# is faster than the grouped GEMM up to about N pairs; its [G, T, Din, Dout] buffer then holds N/k neurons).
FEW_PAIRS_FRACTION = 1.0


def compose_sparse(x: torch.Tensor, pool: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """x: [T, Din], pool: [N, Din, Dout], indices/weights: [T, k] -> [T, Dout], or [G, T, k] -> [G, T, Dout].

    Cost G*T*k*Din*Dout multiply-adds forward (twice that backward); memory of a linear layer on x.
    """
    squeeze = indices.dim() == 2
    if squeeze:
        indices, weights = indices.unsqueeze(0), weights.unsqueeze(0)
    if pool.dtype != x.dtype:
        pool = pool.to(x.dtype)
    if indices.shape[-1] == 0 or x.shape[0] == 0:
        out = x.new_zeros(indices.shape[0], x.shape[0], pool.shape[-1]) + 0 * pool.sum() + 0 * weights.sum()
    elif indices.numel() <= FEW_PAIRS_FRACTION * pool.shape[0]:
        out = _compose_few(x, pool, indices, weights)
    else:
        out = _SparseCompose.apply(x, pool, indices, weights)
    return out[0] if squeeze else out


COMPOSITION_FUNCTIONS = {"sparse": compose_sparse, "dense": compose_dense}


def _autocast_inputs(x: torch.Tensor, pool: torch.Tensor):
    """Cast x and the pool to the autocast dtype when autocast is on for x's device (as nn.Linear would be)."""
    device_type = x.device.type
    if device_type in ("cuda", "cpu", "xpu", "mps") and torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
        return x.to(dtype), pool.to(dtype)
    return x, pool


def compose(x: torch.Tensor, pool: torch.Tensor, indices: torch.Tensor, weights: torch.Tensor, impl: str = "sparse"):
    """x: [..., Din], indices/weights: [..., k] -> [..., Dout] with the chosen implementation."""
    lead = x.shape[:-1]
    if impl == "sparse":
        x, pool = _autocast_inputs(x, pool)
    out = COMPOSITION_FUNCTIONS[impl](
        x.reshape(-1, x.shape[-1]), pool, indices.reshape(-1, indices.shape[-1]), weights.reshape(-1, weights.shape[-1])
    )
    return out.reshape(*lead, pool.shape[-1])


def compose_attention(
    z: torch.Tensor,
    feature_pool: torch.Tensor,
    restore_pool: torch.Tensor,
    n_feature_qk: int,
    n_restore_qk: int,
    choices: dict,
    impl: str = "sparse",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Q, K and V of one layer (spec §3): z [..., D], feature_pool [N_fqk + N_fv, D, R] (Q/K pool first),
    restore_pool [N_rqk + N_rv, R, D], choices: route -> (indices, weights) [..., k] -> (q, k, v) each [..., D].

    The sparse path runs the three feature routes (same input z) as one grouped GEMM over the whole feature pool
    (V indices shifted past the Q/K pool), and the three restore routes as one grouped GEMM over the whole restore
    pool. Besides fewer, larger GEMMs, the pools are never sliced, so backward produces one pool-sized gradient per
    layer instead of one zero-filled full-size gradient per slice. When the Q/K and V pools use different k, or
    with `impl="dense"`, each route is composed on its own from the sliced pools.
    """
    names_f, names_r = ("feature_q", "feature_k", "feature_v"), ("restore_q", "restore_k", "restore_v")
    same_k = len({choices[n][0].shape[-1] for n in names_f}) == 1 and len({choices[n][0].shape[-1] for n in names_r}) == 1
    if impl != "sparse" or not same_k:
        fq, fv = feature_pool[:n_feature_qk], feature_pool[n_feature_qk:]
        rq, rv = restore_pool[:n_restore_qk], restore_pool[n_restore_qk:]
        outs = []
        for (fname, rname), (fp, rp) in zip(zip(names_f, names_r), ((fq, rq), (fq, rq), (fv, rv))):
            h = compose(z, fp, *choices[fname], impl=impl)
            outs.append(compose(h, rp, *choices[rname], impl=impl))
        return tuple(outs)
    lead, d = z.shape[:-1], z.shape[-1]
    z, feature_pool = _autocast_inputs(z, feature_pool)
    kf, kr = choices["feature_q"][0].shape[-1], choices["restore_q"][0].shape[-1]
    f_idx = torch.stack([
        choices["feature_q"][0].reshape(-1, kf), choices["feature_k"][0].reshape(-1, kf),
        choices["feature_v"][0].reshape(-1, kf) + n_feature_qk,
    ])  # [3, T, k]
    f_w = torch.stack([choices[n][1].reshape(-1, kf) for n in names_f])
    h = compose_sparse(z.reshape(-1, d), feature_pool, f_idx, f_w)  # [3, T, R]
    h, restore_pool = _autocast_inputs(h, restore_pool)
    r_idx = torch.cat([
        choices["restore_q"][0].reshape(-1, kr), choices["restore_k"][0].reshape(-1, kr),
        choices["restore_v"][0].reshape(-1, kr) + n_restore_qk,
    ])  # [3T, k]
    r_w = torch.cat([choices[n][1].reshape(-1, kr) for n in names_r])
    out = compose_sparse(h.reshape(-1, h.shape[-1]), restore_pool, r_idx, r_w)  # [3T, D]
    return tuple(o.reshape(*lead, restore_pool.shape[-1]) for o in out.view(3, -1, out.shape[-1]).unbind(0))


__all__ = [
    "compose", "compose_attention", "compose_dense", "compose_sparse", "grouped_matmul", "grouped_weight_grad",
    "COMPOSITION_FUNCTIONS",
]
