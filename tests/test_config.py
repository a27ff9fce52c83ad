"""DawnConfig: presets, research keywords, round trips and every validation error."""

import json

import pytest

from modeling_dawn import DawnConfig, DawnForCausalLM
from modeling_dawn.configuration_dawn import AUTO_MAP

RESEARCH_39M = dict(
    vocab_size=30522, d_model=384, n_layers=12, n_heads=6, rank=64, knowledge_rank=64, max_seq_len=512,
    state_dim=64, d_space=256, n_feature_qk=64, n_feature_v=264, n_restore_qk=64, n_restore_v=264,
    n_feature_know=160, n_restore_know=160, top_k_feature_qk=12, top_k_feature_v=12, top_k_restore_qk=12,
    top_k_restore_v=12, top_k_feature_know=12, top_k_restore_know=12, dropout=0.1, router_dropout=0.1,
    attention_token_routing=True, knowledge_token_routing=True, use_ssm_context=False, gradient_checkpointing=False,
)


def test_defaults_are_dawn_39m_and_match_research_keywords():
    default, research, preset = DawnConfig(), DawnConfig(**RESEARCH_39M), DawnConfig.from_preset("dawn-39m")
    for cfg in (research, preset):
        assert cfg.to_dict() == default.to_dict()
    assert default.hidden_size == 384 and default.num_hidden_layers == 12 and default.attention_rank == 64
    assert default.attention_token_routing and default.knowledge_token_routing and not default.use_ssm_context
    assert (default.load_balance_coef, default.orthogonality_coef, default.knowledge_diversity_coef) == (2e-5, 0.01, 0.1)
    assert default.knowledge_load_balance_coef == 0.0  # not in the paper's recipe
    assert default.to_research_kwargs() == {k: v for k, v in RESEARCH_39M.items() if k != "gradient_checkpointing"}


def test_research_routing_flags_are_honoured():
    cfg = DawnConfig(**{**RESEARCH_39M, "attention_token_routing": False, "use_ssm_context": True})
    assert not cfg.attention_token_routing and cfg.use_ssm_context and cfg.uses_ssm


def test_parameter_counts_of_the_spec():
    assert DawnForCausalLM(DawnConfig()).num_parameters() == 38_730_240
    cumulative = DawnConfig(attention_token_routing=False, knowledge_token_routing=False)
    assert DawnForCausalLM(cumulative).num_parameters() == 39_247_105


def test_round_trip_through_json(tmp_path):
    cfg = DawnConfig.from_preset("dawn-tiny", vocab_size=77, knowledge_token_routing=False, num_labels=3)
    cfg.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "dawn" and saved["auto_map"] == AUTO_MAP
    assert "top_k" not in saved
    loaded = DawnConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == cfg.to_dict()
    assert loaded.num_labels == 3


def test_unknown_preset():
    with pytest.raises(ValueError, match="Unknown DAWN preset 'dawn-7b'"):
        DawnConfig.from_preset("dawn-7b")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(hidden_size=100, num_attention_heads=6), "hidden_size=100 is not divisible by num_attention_heads=6"),
        (dict(top_k_feature_v=0), "top_k_feature_v=0 must be an integer in \\[1, n_feature_v=264\\]"),
        (dict(top_k_restore_know=161), "top_k_restore_know=161"),
        (dict(n_feature_qk=0), "n_feature_qk must be a positive integer, got 0"),
        (dict(vocab_size=-5), "vocab_size must be a positive integer, got -5"),
        (dict(num_hidden_layers=2.5), "num_hidden_layers must be a positive integer, got 2.5"),
        (dict(dropout=1.0), "hidden_dropout=1.0 must be in \\[0, 1\\)"),
        (dict(router_dropout=-0.1), "router_dropout=-0.1"),
        (dict(attention_dropout=1.5), "attention_dropout=1.5"),
        (dict(top_k_feature_know_=3), "did you mean 'top_k_feature_know'"),
        (dict(n_restore_knowledge=3), "did you mean 'n_restore_know'"),
        (dict(hiden_size=64), "did you mean 'hidden_size'"),
        (dict(load_balance_coef=-1.0), "load_balance_coef=-1.0"),
        (dict(knowledge_load_balance_coef=float("nan")), "knowledge_load_balance_coef=nan"),
        (dict(use_ssm_context=True), "use_ssm_context=True needs a circuit with cumulative routing"),
        (dict(hidden_size=64, d_model=128), "both hidden_size=64 and its research alias d_model=128"),
        (dict(neuron_composition="fast"), "neuron_composition='fast'"),
    ],
)
def test_validation_errors_name_field_and_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DawnConfig(**kwargs)


def test_unrelated_extra_keys_are_kept():
    cfg = DawnConfig(my_experiment_tag="run-3")
    assert cfg.my_experiment_tag == "run-3"


def test_model_revalidates_a_config_edited_after_construction():
    cfg = DawnConfig.from_preset("dawn-tiny")
    cfg.top_k_feature_qk = 99
    with pytest.raises(ValueError, match="top_k_feature_qk=99"):
        DawnForCausalLM(cfg)
