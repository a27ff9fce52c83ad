"""The model computes the function of the spec: equality with the per-token reference, causality, padding, heads."""

import pytest
import torch
from conftest import ROUTING_MODES, tiny_config
from reference_dawn import reference_logits

from modeling_dawn import (
    DawnForCausalLM,
    DawnForMaskedLM,
    DawnForSequenceClassification,
    DawnModel,
)
from modeling_dawn.routing import route_sizes, router_logit_slices


def _model(cls=DawnForCausalLM, dtype=torch.float64, **overrides):
    return cls(tiny_config(**overrides)).to(dtype).eval()


def _reference_params(model):
    return {k: v.detach().clone().requires_grad_(True) for k, v in model.state_dict().items()
            if v.is_floating_point()}


@pytest.mark.parametrize("mode", list(ROUTING_MODES))
def test_logits_and_every_gradient_match_reference(mode):
    model = _model(**ROUTING_MODES[mode])
    ids = torch.randint(0, model.config.vocab_size, (2, 7))
    mask = torch.tensor([[1] * 7, [0, 0, 1, 1, 1, 1, 1]])
    valid = mask.bool()
    probe = torch.randn(2, 7, model.config.vocab_size, dtype=torch.float64)

    logits = model(ids, attention_mask=mask).logits
    (logits * probe)[valid].sum().backward()

    params = _reference_params(model)
    ref = reference_logits(params, model.config, ids, mask)
    torch.testing.assert_close(logits[valid], ref[valid], rtol=0, atol=1e-5)
    (ref * probe)[valid].sum().backward()

    named = dict(model.named_parameters())
    checked = 0
    for name, p in params.items():
        if name not in named:  # buffers, the tied lm_head alias
            continue
        # parameters the function does not use (the SSM context without use_ssm_context) get no gradient in both
        grad = named[name].grad if named[name].grad is not None else torch.zeros_like(p)
        ref_grad = p.grad if p.grad is not None else torch.zeros_like(p)
        assert grad.abs().sum() > 0 or ref_grad.abs().sum() == 0 or "context" in name, name
        torch.testing.assert_close(grad, ref_grad, rtol=0, atol=1e-5, msg=f"gradient of {name}")
        checked += 1
    assert checked == len(named)


@pytest.mark.parametrize("mode", ["token", "cumulative", "cumulative_context"])
def test_causal_prefix_equals_full_sequence(mode):
    model = _model(**ROUTING_MODES[mode])
    if model.model.ssm is not None:  # sharply peaked importance scores: exp() would underflow naive prefix sums
        with torch.no_grad():
            model.model.ssm.importance_proj.weight.mul_(300.0)
    ids = torch.randint(0, model.config.vocab_size, (2, 12))
    full = model(ids).logits
    for t in (1, 4, 11):
        prefix = model(ids[:, : t + 1]).logits
        torch.testing.assert_close(prefix[:, t], full[:, t], rtol=0, atol=1e-10)


@pytest.mark.parametrize("mode", ["token", "cumulative_context"])
def test_left_and_right_padding_equal_unpadded(mode):
    model = _model(**ROUTING_MODES[mode])
    short = torch.randint(1, model.config.vocab_size, (1, 5))
    long = torch.randint(1, model.config.vocab_size, (1, 8))
    alone = model(short).logits[0]
    pad = torch.zeros(1, 3, dtype=torch.long)

    right = model(torch.cat([torch.cat([short, pad], 1), long]),
                  attention_mask=torch.tensor([[1] * 5 + [0] * 3, [1] * 8])).logits
    left = model(torch.cat([torch.cat([pad, short], 1), long]),
                 attention_mask=torch.tensor([[0] * 3 + [1] * 5, [1] * 8])).logits
    torch.testing.assert_close(right[0, :5], alone, rtol=0, atol=1e-10)
    torch.testing.assert_close(left[0, 3:], alone, rtol=0, atol=1e-10)
    torch.testing.assert_close(right[1], model(long).logits[0], rtol=0, atol=1e-10)


def test_eager_and_sdpa_attention_agree():
    sdpa = _model(**ROUTING_MODES["token"])
    eager = DawnForCausalLM(tiny_config(attn_implementation="eager")).double().eval()
    eager.load_state_dict(sdpa.state_dict())
    assert eager.config._attn_implementation == "eager"
    ids = torch.randint(1, sdpa.config.vocab_size, (2, 6))
    mask = torch.tensor([[0, 1, 1, 1, 1, 1], [1] * 6])
    torch.testing.assert_close(eager(ids, attention_mask=mask).logits[mask.bool()],
                               sdpa(ids, attention_mask=mask).logits[mask.bool()], rtol=0, atol=1e-10)
    probs = eager(ids, attention_mask=mask, output_attentions=True).attentions
    assert len(probs) == 2 and probs[0].shape == (2, 4, 6, 6)


def test_explicit_position_ids_are_used():
    model = _model()
    ids = torch.randint(0, model.config.vocab_size, (1, 4))
    shifted = model(ids, position_ids=torch.arange(3, 7).unsqueeze(0)).logits
    params = _reference_params(model)
    ref = reference_logits(params, model.config, ids, position_ids=torch.arange(3, 7).unsqueeze(0))
    torch.testing.assert_close(shifted, ref, rtol=0, atol=1e-8)
    assert not torch.allclose(shifted, model(ids).logits)


@pytest.mark.parametrize("mode", ["token", "cumulative"])
def test_all_padding_row_is_finite(mode):
    model = _model(dtype=torch.float32, **ROUTING_MODES[mode])
    model.train()
    ids = torch.randint(0, model.config.vocab_size, (2, 6))
    mask = torch.tensor([[0] * 6, [1] * 6])
    labels = ids.masked_fill(mask == 0, -100)
    out = model(ids, attention_mask=mask, labels=labels)
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("mode", ["token", "cumulative"])
def test_masked_lm_is_bidirectional_and_matches_reference(mode):
    model = _model(DawnForMaskedLM, **ROUTING_MODES[mode])
    ids = torch.randint(0, model.config.vocab_size, (2, 6))
    mask = torch.tensor([[1] * 6, [1, 1, 1, 1, 0, 0]])
    out = model(ids, attention_mask=mask).logits
    ref = reference_logits(_reference_params(model), model.config, ids, mask, causal=False)
    torch.testing.assert_close(out[mask.bool()], ref[mask.bool()], rtol=0, atol=1e-8)
    changed = ids.clone()
    changed[0, -1] = (changed[0, -1] + 1) % model.config.vocab_size
    assert not torch.allclose(model(changed, attention_mask=mask).logits[0, 0], out[0, 0])  # sees the future
    changed = ids.clone()
    changed[1, 5] = (changed[1, 5] + 1) % model.config.vocab_size  # a padded position: must not matter
    torch.testing.assert_close(model(changed, attention_mask=mask).logits[1, :4], out[1, :4], rtol=0, atol=1e-12)


def test_masked_lm_loss_ignores_unmasked_positions():
    model = _model(DawnForMaskedLM)
    ids = torch.randint(0, model.config.vocab_size, (2, 6))
    labels = torch.full_like(ids, -100)
    labels[0, 2] = ids[0, 2]
    out = model(ids, labels=labels)
    expected = torch.nn.functional.cross_entropy(out.logits[0, 2:3], ids[0, 2:3])
    torch.testing.assert_close(out.loss, expected, check_dtype=False)


def test_sequence_classification_pools_last_real_token_and_problem_types():
    model = _model(DawnForSequenceClassification, num_labels=3)
    ids = torch.randint(1, model.config.vocab_size, (1, 5))
    alone = model(ids).logits
    pad = torch.zeros(1, 2, dtype=torch.long)
    right = model(torch.cat([ids, pad], 1), attention_mask=torch.tensor([[1] * 5 + [0] * 2])).logits
    left = model(torch.cat([pad, ids], 1), attention_mask=torch.tensor([[0] * 2 + [1] * 5])).logits
    torch.testing.assert_close(right, alone, rtol=0, atol=1e-10)
    torch.testing.assert_close(left, alone, rtol=0, atol=1e-10)
    # pad_token_id pooling without a mask (right padding)
    torch.testing.assert_close(model(torch.cat([ids, pad], 1)).logits, alone, rtol=0, atol=1e-10)

    batch = torch.randint(1, model.config.vocab_size, (4, 5))
    single = model(batch, labels=torch.tensor([0, 1, 2, 1]))
    assert model.config.problem_type == "single_label_classification"
    torch.testing.assert_close(single.loss, torch.nn.functional.cross_entropy(single.logits, torch.tensor([0, 1, 2, 1])),
                               check_dtype=False)

    multi = _model(DawnForSequenceClassification, num_labels=3, problem_type="multi_label_classification")
    targets = torch.tensor([[1.0, 0, 1], [0, 0, 1], [1, 1, 1], [0, 0, 0]], dtype=torch.float64)
    out = multi(batch, labels=targets)
    torch.testing.assert_close(out.loss, torch.nn.functional.binary_cross_entropy_with_logits(out.logits, targets))

    reg = _model(DawnForSequenceClassification, num_labels=1)
    y = torch.randn(4, dtype=torch.float64)
    out = reg(batch, labels=y)
    assert reg.config.problem_type == "regression"
    torch.testing.assert_close(out.loss, torch.nn.functional.mse_loss(out.logits.squeeze(-1), y))


def test_routing_traces_and_router_logits():
    model = _model(**ROUTING_MODES["mixed"])
    ids = torch.randint(0, model.config.vocab_size, (2, 5))
    out = model(ids, output_routing=True, output_router_logits=True, output_hidden_states=True)
    sizes = route_sizes(model.config)
    assert len(out.routing) == model.config.num_hidden_layers
    for layer in out.routing:
        assert set(layer) == set(sizes)
        for name, trace in layer.items():
            n, k = sizes[name]
            assert trace.indices.shape == (2, 5, k) and trace.weights.shape == (2, 5, k)
            assert trace.indices.min() >= 0 and trace.indices.max() < n
            torch.testing.assert_close(trace.weights.sum(-1), torch.ones(2, 5, dtype=torch.float64))
            assert trace.preferences is None
            assert (trace.indices.sort(-1).values.diff(dim=-1) > 0).all()  # k distinct neurons
    slices = router_logit_slices(model.config)
    assert len(out.router_logits) == 2
    assert out.router_logits[0].shape == (10, max(s.stop for s in slices.values()))
    # token-routed route: top-k of the softmax of its logits
    logits_q = out.router_logits[0][:, slices["feature_q"]].reshape(2, 5, -1)
    expected = logits_q.softmax(-1).topk(sizes["feature_q"][1], dim=-1).indices
    torch.testing.assert_close(out.routing[0]["feature_q"].indices, expected)
    assert len(out.hidden_states) == model.config.num_hidden_layers + 1

    dense = model(ids, output_routing_preferences=True).routing[1]["restore_v"]
    assert dense.preferences.shape == (2, 5, sizes["restore_v"][0])
    torch.testing.assert_close(dense.preferences.sum(-1), torch.ones(2, 5, dtype=torch.float64))


def test_return_dict_false_gives_tuple():
    model = _model()
    ids = torch.randint(0, model.config.vocab_size, (1, 4))
    out = model(ids, labels=ids, return_dict=False, use_cache=False)
    assert isinstance(out, tuple)
    torch.testing.assert_close(out[1], model(ids).logits)


def test_bad_inputs_get_clear_errors_before_compute():
    model = _model(dtype=torch.float32)
    v, p = model.config.vocab_size, model.config.max_position_embeddings
    ids = torch.randint(0, v, (2, 5))
    cases = [
        (dict(input_ids=torch.tensor([[1, v]])), f"token id {v}"),
        (dict(input_ids=torch.tensor([[1, -3]])), "token id -3"),
        (dict(input_ids=torch.zeros(1, p + 1, dtype=torch.long)), f"max_position_embeddings={p}"),
        (dict(input_ids=ids, attention_mask=torch.ones(2, 4)), "attention_mask has shape (2, 4)"),
        (dict(input_ids=ids, inputs_embeds=torch.zeros(2, 5, 64)), "both"),
        (dict(), "neither"),
        (dict(input_ids=ids, labels=torch.zeros(2, 4, dtype=torch.long)), "labels has shape (2, 4)"),
        (dict(input_ids=ids, position_ids=torch.tensor([[0, 1, 2, 3, p]] * 2)), f"position_ids contain {p}"),
        (dict(input_ids=ids.float()), "integer token ids"),
        (dict(inputs_embeds=torch.zeros(2, 5, 7)), "hidden_size=64"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            model(**kwargs)


def test_inputs_embeds_equal_input_ids():
    model = _model()
    ids = torch.randint(0, model.config.vocab_size, (2, 5))
    embeds = model.get_input_embeddings()(ids)
    torch.testing.assert_close(model(inputs_embeds=embeds).logits, model(ids).logits, rtol=0, atol=1e-12)


def test_base_model_output():
    model = DawnModel(tiny_config()).eval()
    out = model(torch.randint(0, 61, (2, 5)))
    assert out.last_hidden_state.shape == (2, 5, 64)
    assert out.load_balance_loss is None  # auxiliary terms exist only in training
