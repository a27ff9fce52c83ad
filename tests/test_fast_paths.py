"""The fast paths compute the same function as the reference paths, forward and backward.

* sparse neuron composition (grouped GEMM over the chosen neurons only) == dense composition (every neuron);
* the chunked selective scan == the sequential recurrence.
Checked at the op level (edge cases: k = 1, k = N, unused neurons, ties, chunking, the loop fallback) and at the
model level in float32, where `torch._grouped_mm` runs, logits and every gradient, both routing modes, padding.
"""

import copy

import pytest
import torch
from conftest import ROUTING_MODES, tiny_config

from modeling_dawn import DawnForCausalLM
from modeling_dawn import neuron_composition as nc
from modeling_dawn.selective_ssm import recurrent_scan, scan_ssm, selective_scan, selective_scan_reference

HAS_GROUPED_MM = hasattr(torch, "_grouped_mm")


def _case(n, din, dout, tokens, k, dtype, groups=None, used=None, generator=None):
    """Random x [T, Din], pool [N, Din, Dout], indices/weights [(G,) T, k] with distinct neurons per token."""
    g = torch.Generator().manual_seed(0) if generator is None else generator
    lead = (tokens,) if groups is None else (groups, tokens)
    candidates = torch.arange(n) if used is None else torch.as_tensor(used)
    scores = torch.rand(*lead, len(candidates), generator=g)
    indices = candidates[scores.topk(k, dim=-1).indices]
    weights = torch.rand(*lead, k, generator=g, dtype=dtype)
    x = torch.randn(tokens, din, generator=g, dtype=dtype)
    pool = torch.randn(n, din, dout, generator=g, dtype=dtype)
    return x, pool, indices, weights


def _grads(fn, x, pool, indices, weights, probe):
    x, pool, weights = (t.detach().clone().requires_grad_(True) for t in (x, pool, weights))
    out = fn(x, pool, indices, weights)
    (out * probe).sum().backward()
    return out.detach(), x.grad, pool.grad, weights.grad


def _dense_grouped(x, pool, indices, weights):
    if indices.dim() == 2:
        return nc.compose_dense(x, pool, indices, weights)
    return torch.stack([nc.compose_dense(x, pool, i, w) for i, w in zip(indices, weights)])


def _assert_sparse_equals_dense(x, pool, indices, weights, tol):
    probe = torch.randn(*indices.shape[:-1], pool.shape[-1], dtype=x.dtype)
    sparse = _grads(nc.compose_sparse, x, pool, indices, weights, probe)
    dense = _grads(_dense_grouped, x, pool, indices, weights, probe)
    for name, a, b in zip(("output", "grad x", "grad pool", "grad weights"), sparse, dense):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol, msg=name)


SHAPES = [(12, 32, 16), (12, 16, 32)]  # feature-like (Din > Dout) and restore-like (Din < Dout)


@pytest.mark.parametrize("n,din,dout", SHAPES)
@pytest.mark.parametrize("k", [1, 5, 12])  # k = 1, in between, k = N
def test_sparse_equals_dense_float64(n, din, dout, k):
    _assert_sparse_equals_dense(*_case(n, din, dout, tokens=23, k=k, dtype=torch.float64), tol=1e-10)


@pytest.mark.skipif(not HAS_GROUPED_MM, reason="torch._grouped_mm not in this torch")
@pytest.mark.parametrize("n,din,dout", SHAPES)
@pytest.mark.parametrize("k", [1, 12])
def test_grouped_mm_path_equals_dense_float32(n, din, dout, k):
    x, pool, indices, weights = _case(n, din, dout, tokens=37, k=k, dtype=torch.float32)
    assert nc._use_grouped_mm(x, pool)  # these shapes must take the grouped GEMM, not the fallback
    _assert_sparse_equals_dense(x, pool, indices, weights, tol=1e-4)
    assert ("cpu", torch.float32) not in nc._GROUPED_MM_UNSUPPORTED


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("k", [1, 4, 12])
def test_few_pairs_path_equals_dense(monkeypatch, dtype, k):
    """The decoding-step path (embedding_bag of the chosen neurons), forced on for a larger batch too."""
    monkeypatch.setattr(nc, "FEW_PAIRS_FRACTION", 1e9)
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    _assert_sparse_equals_dense(*_case(12, 32, 16, tokens=7, k=k, dtype=dtype, groups=3), tol=tol)
    _assert_sparse_equals_dense(*_case(12, 16, 32, tokens=1, k=k, dtype=dtype), tol=tol)


def test_path_choice_by_pair_count(monkeypatch):
    """One decoding token takes the few-pairs path, a sequence the grouped GEMM; a broken path would show."""
    calls, original = [], nc._compose_few

    def spy(*args):
        calls.append("few")
        return original(*args)

    monkeypatch.setattr(nc, "_compose_few", spy)
    x, pool, indices, weights = _case(12, 32, 16, tokens=2, k=3, dtype=torch.float64)
    nc.compose_sparse(x, pool, indices, weights)
    x, pool, indices, weights = _case(12, 32, 16, tokens=20, k=3, dtype=torch.float64)
    nc.compose_sparse(x, pool, indices, weights)
    assert calls == ["few"]


def test_loop_fallback_equals_dense_float32(monkeypatch):
    monkeypatch.setattr(nc, "_HAS_GROUPED_MM", False)  # as on a torch without _grouped_mm
    _assert_sparse_equals_dense(*_case(12, 32, 16, tokens=19, k=4, dtype=torch.float32), tol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_neurons_chosen_by_no_token_get_zero_gradient(dtype):
    used = [1, 4, 5, 9]  # neurons 0, 2, 3, 6, 7, 8, 10, 11 are never selected: empty groups, incl. first and last
    x, pool, indices, weights = _case(12, 32, 16, tokens=9, k=3, dtype=dtype, used=used)
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    _assert_sparse_equals_dense(x, pool, indices, weights, tol=tol)
    _, _, grad_pool, _ = _grads(nc.compose_sparse, x, pool, indices, weights, torch.ones(9, 16, dtype=dtype))
    unused = [i for i in range(12) if i not in used]
    assert grad_pool[unused].abs().max() == 0
    assert (grad_pool[used].flatten(1).abs().amax(1) > 0).all()


def test_ties_and_duplicate_weights():
    """Every token picks the same neurons with equal weights: one group holds all pairs, sort order is tied."""
    x, pool, _, _ = _case(12, 32, 16, tokens=11, k=4, dtype=torch.float64)
    indices = torch.tensor([3, 7, 0, 11]).expand(11, 4)
    weights = torch.full((11, 4), 0.25, dtype=torch.float64)
    _assert_sparse_equals_dense(x, pool, indices, weights, tol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("budget_pairs", [50, 5])  # ~2 neurons per range; one neuron over budget per range
def test_several_index_sets_and_neuron_ranges(monkeypatch, dtype, budget_pairs):
    """[G, T, k] choices over one input (Q and K share a pool), run over many neuron ranges (CHUNK_BYTES)."""
    x, pool, indices, weights = _case(12, 32, 16, tokens=29, k=3, dtype=dtype, groups=3)
    monkeypatch.setattr(nc, "CHUNK_BYTES", 32 * x.element_size() * budget_pairs)
    ends = nc._plan(indices.reshape(-1, 3), 12, 29)[3]
    ranges = nc._neuron_ranges(ends, 32, x.element_size())
    assert len(ranges) > 3
    assert ranges[0][0] == ranges[0][2] == 0 and ranges[-1][1] == 12 and ranges[-1][3] == 3 * 29 * 3
    for (g0, g1, p0, p1), (next_g0, _, next_p0, _) in zip(ranges, ranges[1:]):
        assert g0 < g1 == next_g0 and p1 == next_p0  # consecutive ranges partition neurons and pairs
    for g0, g1, p0, p1 in ranges:
        assert p1 - p0 <= budget_pairs or g1 - g0 == 1  # within budget, unless a single neuron exceeds it
    _assert_sparse_equals_dense(x, pool, indices, weights, tol=1e-10 if dtype == torch.float64 else 1e-4)


def test_empty_inputs_keep_the_graph():
    x, pool, indices, weights = _case(12, 32, 16, tokens=0, k=3, dtype=torch.float64)
    pool.requires_grad_(True)
    out = nc.compose_sparse(x, pool, indices, weights)
    assert out.shape == (0, 16)
    out.sum().backward()
    assert pool.grad is not None and pool.grad.abs().sum() == 0


# ------------------------------------------------------------------------------------------------ model level


def _sparse_and_dense_models(**overrides):
    sparse = DawnForCausalLM(tiny_config(**overrides)).eval()  # float32: the grouped GEMM path
    dense = copy.deepcopy(sparse)
    dense.config.neuron_composition = "dense"
    for module in dense.modules():
        if hasattr(module, "impl"):
            module.impl = "dense"
    return sparse, dense


def _logits_and_grads(model, ids, mask, probe):
    model.zero_grad(set_to_none=True)
    logits = model(ids, attention_mask=mask).logits
    (logits * probe)[mask.bool()].sum().backward()
    return logits.detach(), {n: p.grad for n, p in model.named_parameters()}


@pytest.mark.parametrize(
    "mode,overrides",
    [
        ("token", {}),
        ("cumulative_context", {}),
        ("mixed", {}),
        ("token", dict(top_k_feature_qk=1, top_k_feature_v=1, top_k_restore_qk=1, top_k_restore_v=1,
                       top_k_feature_know=1, top_k_restore_know=1)),
        ("cumulative", dict(top_k_feature_qk=8, top_k_feature_v=16, top_k_restore_qk=8, top_k_restore_v=16,
                            top_k_feature_know=12, top_k_restore_know=12)),  # k = N in every pool
        ("token", dict(top_k_feature_v=2)),  # Q/K and V pools with different k: per-route composition
    ],
)
def test_model_sparse_equals_dense_logits_and_every_gradient(mode, overrides):
    sparse, dense = _sparse_and_dense_models(**ROUTING_MODES[mode], **overrides)
    ids = torch.randint(0, sparse.config.vocab_size, (3, 9))
    mask = torch.tensor([[1] * 9, [0, 0, 0, 1, 1, 1, 1, 1, 1], [1] * 5 + [0] * 4])
    probe = torch.randn(3, 9, sparse.config.vocab_size)
    logits_s, grads_s = _logits_and_grads(sparse, ids, mask, probe)
    logits_d, grads_d = _logits_and_grads(dense, ids, mask, probe)
    valid = mask.bool()
    torch.testing.assert_close(logits_s[valid], logits_d[valid], rtol=1e-4, atol=1e-4)
    assert grads_s.keys() == grads_d.keys()
    for name in grads_s:
        a, b = grads_s[name], grads_d[name]
        if a is None or b is None:
            assert a is None and b is None, name
            continue
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4, msg=f"gradient of {name}")


def test_model_tied_router_scores_pick_the_same_neurons():
    """Zero router weights: every neuron has the same score, so top-k breaks ties; both paths agree."""
    sparse, dense = _sparse_and_dense_models()
    for model in (sparse, dense):
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "router" in name:
                    p.zero_()
    ids = torch.randint(0, sparse.config.vocab_size, (2, 6))
    mask = torch.ones_like(ids)
    probe = torch.randn(2, 6, sparse.config.vocab_size)
    logits_s, grads_s = _logits_and_grads(sparse, ids, mask, probe)
    logits_d, grads_d = _logits_and_grads(dense, ids, mask, probe)
    torch.testing.assert_close(logits_s, logits_d, rtol=1e-4, atol=1e-4)
    for name in grads_s:
        if grads_s[name] is not None:
            torch.testing.assert_close(grads_s[name], grads_d[name], rtol=1e-3, atol=1e-4, msg=name)


# ------------------------------------------------------------------------------------------------ selective scan


def _scan_case(batch, seq, dim, ns, with_state, dtype=torch.float64):
    g = torch.Generator().manual_seed(1)
    decay_log = -torch.rand(batch, seq, dim, ns, generator=g, dtype=dtype) * 2
    decay_log[:, ::5] = 0.0  # padded positions: decay exactly 1
    inputs = torch.randn(batch, seq, dim, ns, generator=g, dtype=dtype)
    c = torch.randn(batch, seq, ns, generator=g, dtype=dtype)
    state = torch.randn(batch, dim, ns, generator=g, dtype=dtype) if with_state else None
    return decay_log, inputs, c, state


@pytest.mark.parametrize("seq,chunk", [(1, None), (7, None), (16, None), (37, None), (37, 5), (37, 64)])
@pytest.mark.parametrize("with_state", [False, True])
def test_chunked_scan_equals_sequential_recurrence(seq, chunk, with_state):
    _assert_scan_matches(lambda *t: selective_scan(*t, chunk=chunk), selective_scan_reference,
                         _scan_case(2, seq, 3, 4, with_state), ("decay_log", "inputs", "c", "state"), tol=1e-10)


def _assert_scan_matches(scan, reference, tensors, names, tol):
    """(y, final state) and the gradient of every input under random probes of both outputs agree."""
    leaves = [t.clone().requires_grad_(True) if t is not None else None for t in tensors]
    leaves_ref = [t.clone().requires_grad_(True) if t is not None else None for t in tensors]
    y, h = scan(*leaves)
    y_ref, h_ref = reference(*leaves_ref)
    torch.testing.assert_close(y, y_ref, rtol=tol, atol=tol)
    torch.testing.assert_close(h, h_ref, rtol=tol, atol=tol)
    probe_y, probe_h = torch.randn_like(y), torch.randn_like(h)
    ((y * probe_y).sum() + (h * probe_h).sum()).backward()
    ((y_ref * probe_y).sum() + (h_ref * probe_h).sum()).backward()
    for name, p, q in zip(names, leaves, leaves_ref):
        if p is not None:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-9, atol=1e-9, msg=name)


def _factored_scan_case(batch, seq, dim, ns, with_state, dtype=torch.float64):
    g = torch.Generator().manual_seed(3)
    delta = torch.rand(batch, seq, dim, generator=g, dtype=dtype)
    delta[:, ::4] = 0.0  # padded positions: no decay, no input
    a = -torch.rand(dim, ns, generator=g, dtype=dtype) * 2
    du = torch.randn(batch, seq, dim, generator=g, dtype=dtype) * (delta > 0)
    b, c = torch.randn(batch, seq, ns, generator=g, dtype=dtype), torch.randn(batch, seq, ns, generator=g, dtype=dtype)
    state = torch.randn(batch, dim, ns, generator=g, dtype=dtype) if with_state else None
    return delta, a, du, b, c, state


def _materialised_reference(delta, a, du, b, c, state):
    return selective_scan_reference(delta.unsqueeze(-1) * a, du.unsqueeze(-1) * b.unsqueeze(-2), c, state)


@pytest.mark.parametrize("scan", [recurrent_scan, scan_ssm])
@pytest.mark.parametrize("seq", [1, 2, 9, 37])  # 37: chunks of 7, the last one partial
@pytest.mark.parametrize("with_state", [False, True])
def test_recurrent_scan_equals_sequential_recurrence_forward_and_backward(scan, seq, with_state):
    """The CPU path (factored inputs, hand-written backward with recomputed chunks) == the autograd loop."""
    _assert_scan_matches(scan, _materialised_reference, _factored_scan_case(2, seq, 3, 4, with_state),
                         ("delta", "a", "du", "b", "c", "state"), tol=1e-12)


def test_recurrent_scan_gradient_of_y_alone_and_no_grad_forward():
    """Only y used (the final state unused: grad_h is None), and a forward without autograd, both exact."""
    delta, a, du, b, c, _ = _factored_scan_case(1, 12, 2, 3, False)
    leaves = [t.clone().requires_grad_(True) for t in (delta, a, du, b, c)]
    leaves_ref = [t.clone().requires_grad_(True) for t in (delta, a, du, b, c)]
    recurrent_scan(*leaves)[0].sum().backward()
    _materialised_reference(*leaves_ref, None)[0].sum().backward()
    for p, q in zip(leaves, leaves_ref):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-9, atol=1e-9)
    with torch.no_grad():
        y, y_ref = recurrent_scan(delta, a, du, b, c)[0], _materialised_reference(delta, a, du, b, c, None)[0]
    torch.testing.assert_close(y, y_ref)


def test_chunked_scan_is_stable_over_long_strong_decay():
    """Decays whose running product underflows to 0 give the same states as the sequential loop, no NaN."""
    decay_log, inputs, c, _ = _scan_case(1, 300, 2, 3, False, dtype=torch.float32)
    decay_log = decay_log * 40  # exp(cumulative) underflows after a few steps
    y, h = selective_scan(decay_log, inputs, c)
    y_ref, h_ref = selective_scan_reference(decay_log, inputs, c)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h, h_ref, rtol=1e-5, atol=1e-5)
