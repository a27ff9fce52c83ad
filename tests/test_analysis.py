"""The interpretability toolkit on a tiny DAWN trained for a few steps: routing statistics add up, the analyses
produce non-degenerate results or say why they cannot, interventions do what they claim, the report is whole."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_config

from modeling_dawn import DawnForCausalLM
from modeling_dawn import routing_analysis as ra
from modeling_dawn.neuron_interventions import (
    NeuronEdit, ablate, decoder_layers, force, intervene, measure_intervention, scale,
)
from modeling_dawn.routing import ROUTE_NAMES, route_sizes

ROOT = Path(__file__).resolve().parents[1]

SUBJECTS = ["the cat", "a dog", "the old man", "my sister", "the small bird", "a teacher", "the children", "paris"]
VERBS = ["sees", "likes", "quickly eats", "finds", "slowly reads", "carries", "paints", "visits"]
OBJECTS = ["the red ball", "a big house", "two green apples", "the long river", "berlin", "a quiet garden",
           "three books", "the capital"]
EXTRAS = ["in the morning", "and then sleeps", "because it is warm", "with great care", "near the sea"]


def _corpus(n=60):
    lines = []
    for i in range(n):
        s = f"{SUBJECTS[i % 8]} {VERBS[(i * 3) % 8]} {OBJECTS[(i * 5) % 8]} {EXTRAS[i % 5]}."
        lines.append(s[0].upper() + s[1:])
    lines.append("The capital of France is Paris. The capital of Germany is Berlin.")
    return lines


def _spacy_available():
    try:
        ra.load_pos_tagger()
        return True
    except ra.AnalysisError:
        return False


HAVE_SPACY = _spacy_available()


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """(model dir, text file, model, tokenizer): a dawn-tiny trained 20 AdamW steps, saved with its tokenizer."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    root = tmp_path_factory.mktemp("analysis")
    lines = _corpus()
    text_file = root / "text.txt"
    text_file.write_text("\n".join(lines) + "\n")
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(lines, trainers.WordPieceTrainer(vocab_size=200, special_tokens=["[PAD]", "[UNK]"]))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]")
    torch.manual_seed(0)
    model = DawnForCausalLM(tiny_config(vocab_size=len(tokenizer)))
    ids = tokenizer(" ".join(lines), add_special_tokens=False)["input_ids"]
    data = torch.tensor(ids[: (len(ids) // 32) * 32]).view(-1, 32)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(20):
        batch = data[(step * 4) % len(data):][:4]
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    model_dir = root / "model"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    return model_dir, text_file, model, tokenizer


@pytest.fixture(scope="session")
def stats(trained):
    _, text_file, model, tokenizer = trained
    tagger = ra.load_pos_tagger() if HAVE_SPACY else None
    batches = ra.text_batches(ra.read_text_file(text_file), tokenizer, block_size=24, batch_size=3, tagger=tagger)
    return ra.collect_routing_statistics(model, batches, keep_batches_tokens=10_000)


@pytest.fixture(scope="session")
def report(trained, tmp_path_factory):
    model_dir, text_file, _, _ = trained
    out = tmp_path_factory.mktemp("report")
    results = ra.run_analysis(model_dir, text_file, out, max_tokens=600, batch_size=4, block_size=32,
                              facts_top_k=10_000, progress=False)
    return out, results


# ------------------------------------------------------------------------------------------------ statistics


def test_counts_add_up(trained, stats):
    _, text_file, model, tokenizer = trained
    stats, _ = stats
    n_tokens = len(tokenizer(" ".join(ra.read_text_file(text_file)), add_special_tokens=False)["input_ids"])
    assert abs(stats.n_tokens - n_tokens) <= 2 * len(list(ra.read_text_file(text_file)))  # word joins may differ
    layers = model.config.num_hidden_layers
    for route, (n, k) in route_sizes(model.config).items():
        assert int(stats.counts[route].sum()) == stats.n_tokens * k * layers, route
        assert (stats.counts[route].sum(1) == stats.n_tokens * k).all()
        torch.testing.assert_close(stats.weight_sums[route].sum(), torch.tensor(stats.n_tokens * layers * 1.0,
                                   dtype=torch.float64), rtol=1e-4, atol=1e-3)
        assert stats.rates(route).sum().item() == pytest.approx(k)
    for (f, r), m in stats.coselection.items():
        kf, kr = route_sizes(model.config)[f][1], route_sizes(model.config)[r][1]
        assert int(m.sum()) == stats.n_tokens * layers * kf * kr


def test_padding_is_not_counted(trained):
    _, _, model, tokenizer = trained
    ids = tokenizer(["the cat sees the red ball", "a dog"], add_special_tokens=False, padding=True,
                    return_tensors="pt")
    stats = ra.RoutingStatistics.for_config(model.config)
    with torch.no_grad():
        out = model(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"], output_routing=True)
    stats.update(out.routing, ids["attention_mask"].bool())
    assert stats.n_tokens == int(ids["attention_mask"].sum())
    k = route_sizes(model.config)["feature_v"][1]
    assert int(stats.counts["feature_v"].sum()) == stats.n_tokens * k * model.config.num_hidden_layers


def test_health_and_qk(stats):
    stats, _ = stats
    health = ra.neuron_health(stats)
    for route, e in health["routes"].items():
        m = e["measured"]
        assert 0.0 <= m["gini"] < 1.0
        assert m["n_dead"] == sum(r < 0.01 for r in m["rates"])
        assert e["usage_ema"]["skipped"]  # no usage given
    qk = ra.qk_specialization(stats)
    for pool, e in qk["pools"].items():
        assert e["r"] is not None and -1.0 <= e["r"] <= 1.0
        assert all(r is None or -1.0 <= r <= 1.0 for r in e["r_per_layer"])
        assert e["q_only"] + e["k_only"] + e["shared"] + e["unused"] == len(e["q_counts"])


def test_gini_pearson_edge_cases():
    assert ra.gini([1, 1, 1, 1]) == pytest.approx(0.0)
    assert ra.gini([0, 0, 0, 4]) == pytest.approx(0.75)
    with pytest.raises(ra.AnalysisError):
        ra.gini([0, 0])
    assert ra.pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert ra.pearson([1, 1, 1], [1, 2, 3]) is None


def test_empty_statistics_raise(trained):
    stats = ra.RoutingStatistics.for_config(trained[2].config)
    with pytest.raises(ra.AnalysisError, match="no tokens"):
        ra.neuron_health(stats)
    with pytest.raises(ra.AnalysisError, match="POS tag"):
        ra.pos_alignment(stats)


def test_usage_ema_is_reported_when_present(trained, stats):
    model = trained[2]
    health = ra.neuron_health(stats[0], model.model.router.usage())
    assert not health["routes"]["feature_q"]["usage_ema"].get("skipped")  # trained: the EMA holds data
    zero = {r: torch.zeros_like(t) for r, t in model.model.router.usage().items()}
    assert "all zero" in ra.neuron_health(stats[0], zero)["routes"]["feature_q"]["usage_ema"]["reason"]


# ------------------------------------------------------------------------------------------------ POS


@pytest.mark.skipif(not HAVE_SPACY, reason="spaCy English model not installed")
def test_pos_tables_cover_tags_present(trained, stats):
    stats, _ = stats
    nlp = ra.load_pos_tagger()
    present = {t.pos_ for line in ra.read_text_file(trained[1]) for t in nlp(line) if not t.is_space}
    pos = ra.pos_alignment(stats)
    assert set(pos["tags"]) == present
    for route, e in pos["routes"].items():
        n = route_sizes(trained[2].config)[route][0]
        assert set(e["top_neurons"]) == present
        assert len(e["frequency"]) == len(present) and all(len(row) == n for row in e["frequency"])
        k = route_sizes(trained[2].config)[route][1]
        for row in e["frequency"]:
            assert sum(row) == pytest.approx(k, abs=1e-4)  # every tagged decision picks k neurons
        assert len({tuple(row) for row in e["frequency"]}) > 1  # not a constant table
        for s in e["specificity"]:
            assert s["specificity"] is None or s["specificity"] >= 1.0


@pytest.mark.skipif(not HAVE_SPACY, reason="spaCy English model not installed")
def test_piece_tags_follow_character_offsets(trained):
    tokenizer = trained[3]
    nlp = ra.load_pos_tagger()
    text = "The children quickly paint the riverbank."
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    tags = ra.piece_tags(text, enc["offset_mapping"], nlp(text))
    words = {t.idx: t.pos_ for t in nlp(text)}
    by_word = {}
    for (s, e), tag in zip(enc["offset_mapping"], tags):
        word_start = max(i for i in words if i <= s)
        by_word.setdefault(word_start, set()).add(ra.UPOS_TAGS[tag])
    assert all(v == {words[w]} for w, v in by_word.items())  # every piece of a word has the word's tag
    assert len(tags) > len(words) - 1


def test_pos_skipped_without_tagger(trained, tmp_path):
    model_dir, text_file, model, tokenizer = trained
    res = ra.run_analysis(model_dir, text_file, tmp_path, model=model, tokenizer=tokenizer, max_tokens=200,
                          block_size=32, pos=False, plots=False, progress=False)
    assert res["pos_alignment"]["skipped"] and "turned off" in res["pos_alignment"]["reason"]
    assert res["interventions"]["skipped"]
    with pytest.raises(ra.AnalysisError, match="en_core|spaCy"):
        ra.load_pos_tagger("no_such_spacy_model_xyz")


# ------------------------------------------------------------------------------------------------ interventions


def test_ablating_nothing_changes_nothing(trained):
    model = trained[2]
    ids = torch.randint(0, model.config.vocab_size, (2, 12))
    with torch.no_grad():
        base = model(ids).logits
        with scale(model, "feature_know", "all", 1.0):
            same = model(ids).logits
        with ablate(model, "feature_q", [0], layers=[]):  # an empty layer set touches nothing
            same2 = model(ids).logits
    torch.testing.assert_close(same, base, rtol=0, atol=0)
    torch.testing.assert_close(same2, base, rtol=0, atol=0)
    assert all(layer.route_intervention is None for layer in decoder_layers(model))


def test_ablating_a_whole_route_changes_the_loss(trained):
    model = trained[2]
    ids = torch.randint(0, model.config.vocab_size, (2, 16))
    batches = [{"input_ids": ids}]
    for route in ("feature_know", "restore_v"):
        m = measure_intervention(model, batches, NeuronEdit(route, "all", "ablate"))
        assert abs(m["delta_loss"]) > 1e-4, route
        assert m["kl"] > 0


def test_ablation_only_hits_given_layers_and_composes(trained):
    model = trained[2]
    ids = torch.randint(0, model.config.vocab_size, (1, 10))
    seen = []

    def recorder(layer_idx, route, indices, weights, prefs):
        seen.append((layer_idx, route))
        return indices, weights

    layers = decoder_layers(model)
    layers[1].route_intervention = recorder
    try:
        with torch.no_grad(), ablate(model, "feature_know", "all", layers=[1]):
            out = model(ids, output_routing=True)
        assert (out.routing[1]["feature_know"].weights == 0).all()
        assert (out.routing[0]["feature_know"].weights > 0).all()
        assert (1, "feature_know") in seen  # the existing hook still ran
        assert layers[1].route_intervention is recorder  # and is restored
    finally:
        layers[1].route_intervention = None


def test_force_puts_neurons_in_every_selection(trained):
    model = trained[2]
    ids = torch.randint(0, model.config.vocab_size, (2, 9))
    n, k = route_sizes(model.config)["feature_v"]
    with torch.no_grad(), force(model, "feature_v", [n - 1, 0]):
        out = model(ids, output_routing=True)
    for traces in out.routing:
        t = traces["feature_v"]
        assert ((t.indices == n - 1).any(-1) & (t.indices == 0).any(-1)).all()
        torch.testing.assert_close(t.weights.sum(-1), torch.ones(2, 9), rtol=0, atol=1e-5)
        assert (t.indices.sort(-1).values.diff(dim=-1) > 0).all()  # no duplicates
        forced_w = t.weights[t.indices == 0]
        torch.testing.assert_close(forced_w, torch.full_like(forced_w, 1.0 / k))


def test_bad_interventions_are_errors(trained):
    model = trained[2]
    n, k = route_sizes(model.config)["feature_q"]
    for edit, match in [(NeuronEdit("feature_x"), "unknown route"), (NeuronEdit("feature_q", (n,)), "out of range"),
                        (NeuronEdit("feature_q", tuple(range(k + 1)), "force"), "cannot force"),
                        (NeuronEdit("feature_q", layers=(99,)), "layers"), (NeuronEdit("feature_q", mode="x"),
                                                                            "mode")]:
        with pytest.raises(ValueError, match=match):
            with intervene(model, edit):
                pass
    assert all(layer.route_intervention is None for layer in decoder_layers(model))


# ------------------------------------------------------------------------------------------------ paths, facts


def test_routing_path_and_facts(trained):
    _, _, model, tokenizer = trained
    path = ra.routing_path(model, tokenizer, "the cat sees paris")
    assert len(path["path"]) == len(path["tokens"]) == 4
    k = route_sizes(model.config)["feature_know"][1]
    assert all(len(p["layers"]) == model.config.num_hidden_layers for p in path["path"])
    assert all(len(p["layers"][0]["feature_know"]["neurons"]) == k for p in path["path"])
    facts = [("the capital of france is", "paris"), ("the cat sees the red", "ball")]
    none = ra.factual_neurons(model, tokenizer, facts, top_k=1)
    if none.get("skipped"):
        assert "at least two" in none["reason"] and len(none["facts"]) == 2
    every = ra.factual_neurons(model, tokenizer, facts, top_k=10_000)  # every answer counts as predicted
    assert every["n_predicted"] == 2 and every["n_shared"] > 0
    assert every["n_shared"] + every["n_fact_specific"] <= every["n_active_per_fact"] * 2


def test_facts_file(tmp_path):
    good = tmp_path / "facts.tsv"
    good.write_text("# comment\nThe capital of France is\tParis\n\nTwo plus two equals\tfour\n")
    assert ra.load_facts(str(good)) == [("The capital of France is", "Paris"), ("Two plus two equals", "four")]
    bad = tmp_path / "bad.tsv"
    bad.write_text("no tab here\n")
    with pytest.raises(ra.AnalysisError, match="prompt<TAB>answer"):
        ra.load_facts(str(bad))
    assert len(ra.load_facts()) >= 20


# ------------------------------------------------------------------------------------------------ the report


def test_report(report):
    out, results = report
    data = json.loads((out / "analysis.json").read_text())
    for section in ("neuron_health", "qk_specialization", "pos_alignment", "routing_paths", "factual",
                    "coselection"):
        assert section in data
    for pool in ("feature_qk", "restore_qk"):
        assert -1.0 <= data["qk_specialization"]["pools"][pool]["r"] <= 1.0
    if HAVE_SPACY:
        assert not data["pos_alignment"].get("skipped")
        assert not data["interventions"].get("skipped"), data["interventions"]
    else:
        assert data["pos_alignment"]["skipped"] and data["pos_alignment"]["reason"]
    assert not data["factual"].get("skipped")  # facts_top_k = vocabulary: every fact counts
    html = (out / "report.html").read_text()
    images = re.findall(r"<img src='([^']+)'", html)
    assert images and all((out / img).is_file() and (out / img).stat().st_size > 1000 for img in images)
    assert "neuron_health.png" in images and "qk_specialization.png" in images


def test_too_little_text_is_an_error(trained, tmp_path):
    model_dir, _, model, tokenizer = trained
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(ra.AnalysisError, match="no tokens"):
        ra.run_analysis(model_dir, empty, tmp_path / "o", model=model, tokenizer=tokenizer, pos=False,
                        plots=False, progress=False)


def test_script_end_to_end(trained, tmp_path):
    model_dir, text_file, _, _ = trained
    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "analyze.py"), "--model", str(model_dir), "--text_file",
         str(text_file), "--output_dir", str(out), "--max_tokens", "300", "--block_size", "32", "--no_pos",
         "--no_progress"], capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[skipped] pos_alignment" in proc.stderr
    data = json.loads((out / "analysis.json").read_text())
    assert data["meta"]["tokens"] == 300
    assert set(data["routing_paths"]["path"][0]["layers"][0]) == set(ROUTE_NAMES)


def test_missing_tagger_skips_pos_with_the_reason(trained, tmp_path, monkeypatch):
    model_dir, text_file, model, tokenizer = trained

    def no_tagger(name=None):
        raise ra.AnalysisError("spaCy is not installed (test); install it with: " + ra.SPACY_INSTALL_HINT)

    monkeypatch.setattr(ra, "load_pos_tagger", no_tagger)
    res = ra.run_analysis(model_dir, text_file, tmp_path, model=model, tokenizer=tokenizer, max_tokens=200,
                          block_size=32, plots=False, progress=False)
    assert res["pos_alignment"] == {"skipped": True, "reason": res["pos_alignment"]["reason"]}
    assert "spaCy is not installed" in res["pos_alignment"]["reason"]
    assert "spaCy is not installed" in res["interventions"]["reason"]
    html = (tmp_path / "report.html").read_text()
    assert "Skipped: spaCy is not installed" in html


def test_constant_counts_give_undefined_r_with_reason(trained):
    stats = ra.RoutingStatistics.for_config(trained[2].config)
    n = stats.sizes["feature_q"][0]
    stats.n_tokens = 10
    for route, (size, k) in stats.sizes.items():
        stats.counts[route][:] = torch.arange(size) % 3 + 1
    stats.counts["feature_q"][:] = 5  # Q uses every neuron equally: r is undefined
    qk = ra.qk_specialization(stats)
    e = qk["pools"]["feature_qk"]
    assert e["r"] is None and "undefined" in e["r_undefined_reason"]
    assert e["r_per_layer"] == [None] * stats.n_layers and "r_per_layer_undefined_reason" in e
    assert qk["pools"]["restore_qk"]["r"] == pytest.approx(1.0)
    assert len(e["categories_per_layer"]) == stats.n_layers and e["shared"] == n


@pytest.mark.skipif(not HAVE_SPACY, reason="spaCy English model not installed")
def test_pos_ablation_experiment(trained, stats):
    from modeling_dawn.neuron_interventions import pos_ablation_experiment

    stats_, kept = stats
    model = trained[2]
    pos = ra.pos_alignment(stats_)
    aligned = pos["routes"]["feature_know"]["most_aligned"]["NOUN"][:3]
    res = pos_ablation_experiment(model, kept, aligned, "feature_know", "NOUN", ra.UPOS_TAGS, n_random=2)
    assert res["aligned"]["neurons"] == sorted(aligned)
    assert all(not set(r["neurons"]) & set(aligned) for r in res["random"])
    assert res["aligned"]["tag_tokens"] > 0 and res["aligned"]["other_tokens"] > 0
    assert all(isinstance(v, float) for v in (res["selectivity_aligned"], res["selectivity_random"]))
