"""Training-mode behaviour: auxiliary losses, usage statistics, activation checkpointing, Trainer accumulation."""

import copy
import warnings

import pytest
import torch
from conftest import ROUTING_MODES, tiny_config
from datasets import Dataset
from transformers import Trainer, TrainingArguments

from modeling_dawn import DawnForCausalLM
from modeling_dawn.auxiliary_losses import knowledge_diversity_loss, orthogonality_loss
from modeling_dawn.routing import ROUTES


def _enable_activation_checkpointing(model, **checkpoint_kwargs):
    """transformers' activation_checkpointing_enable where it exists (gradient_checkpointing_enable is its deprecated
    alias there), gradient_checkpointing_enable on versions before the rename."""
    if hasattr(model, "activation_checkpointing_enable"):
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)  # no deprecated path is taken
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=checkpoint_kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpoint_kwargs)


def _train_model(**overrides):
    # dropout off so that two forwards are comparable; routing and aux terms still run in training mode
    config = tiny_config(dropout=0.0, router_dropout=0.0, attention_dropout=0.0, **overrides)
    return DawnForCausalLM(config).double().train()


@pytest.mark.parametrize("knowledge_load_balance_coef", [0.0, 0.3])
def test_training_loss_is_cross_entropy_plus_weighted_aux_terms(knowledge_load_balance_coef):
    model = _train_model(knowledge_load_balance_coef=knowledge_load_balance_coef)
    ids = torch.randint(0, 61, (2, 8))
    out = model(ids, labels=ids)
    cfg = model.config
    assert out.load_balance_loss > 0 and out.knowledge_diversity_loss > 0 and out.knowledge_load_balance_loss > 0
    assert out.orthogonality_loss < 1e-10  # orthogonal initialisation
    expected_aux = (cfg.load_balance_coef * out.load_balance_loss + cfg.orthogonality_coef * out.orthogonality_loss
                    + cfg.knowledge_diversity_coef * out.knowledge_diversity_loss
                    + knowledge_load_balance_coef * out.knowledge_load_balance_loss)
    torch.testing.assert_close(out.aux_loss, expected_aux)
    ce = torch.nn.functional.cross_entropy(out.logits[:, :-1].reshape(-1, 61).float(), ids[:, 1:].reshape(-1))
    torch.testing.assert_close(out.loss, ce + expected_aux, check_dtype=False)
    model.eval()
    out = model(ids, labels=ids)
    assert out.aux_loss is None
    torch.testing.assert_close(out.loss, ce, check_dtype=False, rtol=1e-6, atol=1e-6)


def test_load_balance_term_from_dense_preferences():
    model = _train_model()
    ids = torch.randint(0, 61, (2, 8))
    mask = torch.tensor([[1] * 8, [0, 0, 0, 1, 1, 1, 1, 1]])
    out = model(ids, attention_mask=mask, output_routing_preferences=True)
    valid = mask.bool()
    expected = {"attention": 0.0, "knowledge": 0.0}
    for layer in out.routing:
        for i, route in enumerate(ROUTES):
            prefs = layer[route.name].preferences[valid]  # [tokens, N]
            mean, n = prefs.mean(0), prefs.shape[-1]
            circuit = "attention" if i < 6 else "knowledge"
            expected[circuit] = expected[circuit] + n * ((mean - 1.0 / n) ** 2).sum()
    torch.testing.assert_close(out.load_balance_loss, expected["attention"])
    torch.testing.assert_close(out.knowledge_load_balance_loss, expected["knowledge"])


def test_orthogonality_and_diversity_terms():
    eye_like = torch.linalg.qr(torch.randn(4, 8, 3)).Q  # [4, 8, 3] orthonormal columns
    assert orthogonality_loss([eye_like], [eye_like.transpose(1, 2)]) < 1e-10
    assert orthogonality_loss([2 * eye_like], [eye_like.transpose(1, 2)]) > 0.1
    same = torch.ones(3, 4, 5)
    torch.testing.assert_close(knowledge_diversity_loss(same, same), torch.tensor(1.0))
    orth = torch.eye(6).reshape(6, 2, 3)
    torch.testing.assert_close(knowledge_diversity_loss(orth, orth), torch.tensor(0.0))


def test_usage_statistics_update_once_per_training_forward_only():
    model = _train_model()
    router = model.model.router
    ids = torch.randint(0, 61, (2, 8))
    mask = torch.tensor([[1] * 8, [1] * 5 + [0] * 3])
    out = model(ids, attention_mask=mask, output_routing=True)
    valid = mask.bool()
    n_valid = valid.sum()
    for route in ROUTES:
        n = router.usage()[route.name].shape[0]
        fraction = torch.zeros(n, dtype=torch.float64)
        for layer in out.routing:
            counts = torch.bincount(layer[route.name].indices[valid].reshape(-1), minlength=n)
            fraction += counts / n_valid / len(out.routing)
        # decay 0.99 from zero: one update -> 0.01 * fraction
        torch.testing.assert_close(router.usage()[route.name], 0.01 * fraction, check_dtype=False)
    before = {k: v.clone() for k, v in router.usage().items()}
    model.eval()
    model(ids)
    with torch.no_grad():
        model.train()
        model(ids)
    assert not torch.equal(before["feature_q"], router.usage()["feature_q"])  # no_grad training forward updates
    model.eval()
    after = {k: v.clone() for k, v in router.usage().items()}
    model(ids)
    assert all(torch.equal(after[k], router.usage()[k]) for k in after)  # eval never updates


@pytest.mark.parametrize("mode", ["token", "cumulative_context"])
def test_activation_checkpointing_gives_identical_gradients_and_one_usage_update(mode):
    torch.manual_seed(1)
    plain = _train_model(**ROUTING_MODES[mode])
    ckpt = copy.deepcopy(plain)
    _enable_activation_checkpointing(ckpt, use_reentrant=False)
    assert all(layer.gradient_checkpointing for layer in ckpt.model.layers)
    ids = torch.randint(0, 61, (2, 8))
    for model in (plain, ckpt):
        model(ids, labels=ids).loss.backward()
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        if p.grad is None:
            assert q.grad is None, name
            continue
        torch.testing.assert_close(q.grad, p.grad, rtol=0, atol=1e-12, msg=name)
    for name, buf in plain.model.router.usage().items():
        torch.testing.assert_close(ckpt.model.router.usage()[name], buf, rtol=0, atol=0)

    reentrant = copy.deepcopy(plain)
    _enable_activation_checkpointing(reentrant, use_reentrant=True)
    with pytest.raises(ValueError, match="use_reentrant=False"):
        reentrant(ids, labels=ids)


def test_trainer_activation_checkpointing_flag(tmp_path):
    """The Trainer flag (activation_checkpointing, formerly gradient_checkpointing) switches it on for every layer,
    without deprecation warnings, and training runs."""
    flag = ("activation_checkpointing" if "activation_checkpointing" in TrainingArguments.__dataclass_fields__
            else "gradient_checkpointing")
    model = _train_model()
    data = Dataset.from_list([{"input_ids": [int(t) for t in torch.randint(1, 61, (8,))]} for _ in range(2)])

    def collate(batch):
        ids = torch.tensor([b["input_ids"] for b in batch])
        return {"input_ids": ids, "labels": ids}

    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        targs = TrainingArguments(
            output_dir=str(tmp_path), per_device_train_batch_size=2, max_steps=1, report_to=[], save_strategy="no",
            use_cpu=True, disable_tqdm=True, **{flag: True},
        )
        result = Trainer(model=model, args=targs, train_dataset=data, data_collator=collate).train()
    assert all(layer.gradient_checkpointing for layer in model.model.layers)
    assert result.training_loss > 0


def test_trainer_gradient_accumulation_is_exact(tmp_path):
    """batch 2 x 1 step == batch 1 x 2 accumulation steps, with rows of different numbers of label tokens.

    The load-balance term is a batch statistic (like BatchNorm), which no micro-batching can reproduce exactly;
    it is switched off here. Cross-entropy and the weight-only terms are exact.
    """
    torch.manual_seed(0)
    rows = [[int(t) for t in torch.randint(1, 61, (8,))], [int(t) for t in torch.randint(1, 61, (8,))]]
    rows[1][5:] = [-100] * 3  # fewer label tokens in the second row: naive averaging would be wrong
    data = Dataset.from_list([{"input_ids": [max(t, 0) for t in r], "labels": r} for r in rows])

    class Collator:
        def __call__(self, batch):
            return {"input_ids": torch.tensor([b["input_ids"] for b in batch]),
                    "labels": torch.tensor([b["labels"] for b in batch])}

    base = DawnForCausalLM(tiny_config(dropout=0.0, router_dropout=0.0, attention_dropout=0.0,
                                       load_balance_coef=0.0)).double()
    full, accumulated = copy.deepcopy(base), copy.deepcopy(base)

    def run(model, bs, acc, name):
        targs = TrainingArguments(
            output_dir=str(tmp_path / name), per_device_train_batch_size=bs, gradient_accumulation_steps=acc,
            max_steps=1, learning_rate=1.0, lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=0.0,
            optim="sgd", report_to=[], save_strategy="no", use_cpu=True, seed=0, disable_tqdm=True,
        )
        Trainer(model=model, args=targs, train_dataset=data, data_collator=Collator()).train()
        return {k: v.detach().clone() for k, v in model.named_parameters()}

    w_full = run(full, 2, 1, "full")
    w_acc = run(accumulated, 1, 2, "acc")
    moved = 0
    for name, p in base.named_parameters():
        # cross-entropy is computed in fp32 by Transformers' loss: agreement to fp32 precision; a wrong
        # normalisation (mean per micro-batch, aux counted twice) is off by tens of percent
        torch.testing.assert_close(w_acc[name], w_full[name], rtol=1e-6, atol=1e-9,
                                   msg=lambda m, name=name: f"{name}: {m}")
        moved += int(not torch.equal(w_full[name], p))
    assert moved > 10  # the step really changed the weights
