#!/usr/bin/env python
"""Benchmark DAWN against the paper's matched vanilla Transformer (GPT-2, 40.3M parameters) in one process.

Measured, for DAWN in token routing and in cumulative (SSM) routing and for GPT-2, with the runs of the models
alternated and the median of --repeats runs reported:

* training step (forward + backward + AdamW step, dropout on), forward (inference, no grad) and tokens/s, at each
  (batch, sequence) shape of --shapes;
* peak training memory: on CPU the peak resident memory of a fresh process that builds the model and runs two
  training steps, less that process's footprint before the model is built; on CUDA torch's peak allocation;
* the selective scan of cumulative mode at batch x 512, forward and forward + backward, from the SSM's factored
  inputs: a plain loop over positions with autograd through it (how the research code runs it) against the
  chunked scan (CUDA's path) and the recurrent scan with its hand-written backward (CPU's path);
* cached greedy decoding of --decode_tokens new tokens (tokens/s), DAWN vs GPT-2, both with their caches.

On CUDA the model runs under bf16 autocast (fp32 weights), on CPU in fp32. Ratios are DAWN / GPT-2 measured in
the same run, which is what to compare across machines; absolute times on a shared machine are noisy.

The result is a markdown section headed by the device; `--output FILE` replaces that device's section in FILE
and keeps the others (so CPU and GPU rows live in one committed table, docs/benchmarks.md).

    python scripts/benchmark.py                          # everything, default shapes, prints the markdown
    python scripts/benchmark.py --output docs/benchmarks.md
    python scripts/benchmark.py --shapes 4x256 --skip memory decode --repeats 5
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

from modeling_dawn import DawnConfig, DawnForCausalLM  # noqa: E402
from modeling_dawn.selective_ssm import (  # noqa: E402
    recurrent_scan, scan_path, selective_scan, selective_scan_reference,
)

CUMULATIVE = dict(attention_token_routing=False, knowledge_token_routing=False)
SECTIONS = ("train", "memory", "scan", "decode")
# The paper's vanilla baseline for DAWN-39M (40,348,800 parameters).
GPT2_BASELINE = dict(vocab_size=30522, n_positions=512, n_embd=432, n_layer=12, n_head=6, n_inner=1728)
TARGETS = dict(train=1.4, memory=1.3, forward=1.3, train_cumulative=1.6, scan_speedup=10.0, decode=1.5)


# ------------------------------------------------------------------------------------------------ models


@dataclass(frozen=True)
class ModelSpec:
    """What to build: `name` in the tables, `kind` dawn|gpt2, DAWN preset and overrides or GPT-2 config kwargs."""

    name: str
    kind: str
    kwargs: dict = field(default_factory=dict)

    def tiny(self) -> "ModelSpec":
        """A small model of the same kind (to touch the library code paths before measuring memory)."""
        if self.kind == "gpt2":
            return ModelSpec(self.name, "gpt2", dict(vocab_size=128, n_positions=32, n_embd=32, n_layer=1, n_head=2))
        return ModelSpec(self.name, "dawn", {**self.kwargs, "preset": "dawn-tiny"})

    def build(self) -> torch.nn.Module:
        torch.manual_seed(0)
        if self.kind == "gpt2":
            return GPT2LMHeadModel(GPT2Config(**self.kwargs))
        preset = self.kwargs.get("preset", "dawn-39m")
        return DawnForCausalLM(DawnConfig.from_preset(preset, **{k: v for k, v in self.kwargs.items() if k != "preset"}))


def model_specs(args) -> list[ModelSpec]:
    """DAWN (token, cumulative) and the GPT-2 baseline, or tiny stand-ins with --preset dawn-tiny (smoke tests)."""
    dawn = [ModelSpec("DAWN token", "dawn", dict(preset=args.preset)),
            ModelSpec("DAWN cumulative", "dawn", dict(preset=args.preset, **CUMULATIVE))]
    dawn = [spec for spec in dawn if spec.name.split()[1] in args.modes]
    if args.preset == "dawn-39m":
        gpt2 = dict(GPT2_BASELINE)
    else:  # a GPT-2 with the preset's width, depth, vocabulary and positions
        cfg = DawnConfig.from_preset(args.preset)
        gpt2 = dict(vocab_size=cfg.vocab_size, n_positions=cfg.max_position_embeddings, n_embd=cfg.hidden_size,
                    n_layer=cfg.num_hidden_layers, n_head=cfg.num_attention_heads, n_inner=4 * cfg.hidden_size)
    return dawn + [ModelSpec("GPT-2", "gpt2", gpt2)]


def vocab_and_positions(model) -> tuple[int, int]:
    cfg = model.config
    return cfg.vocab_size, getattr(cfg, "max_position_embeddings", None) or cfg.n_positions


# ------------------------------------------------------------------------------------------------ timing


class Clock:
    """Wall time of a callable; on CUDA it synchronises before reading the clock (never inside the callable)."""

    def __init__(self, device: torch.device):
        self.device = device

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __call__(self, fn) -> float:
        self.sync()
        start = time.perf_counter()
        fn()
        self.sync()
        return time.perf_counter() - start


def autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def make_batch(model, batch: int, seq: int, device) -> torch.Tensor:
    vocab, _ = vocab_and_positions(model)
    return torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(1)).to(device)


class TrainStep:
    """One optimisation step of the paper's recipe: loss (with DAWN's auxiliary terms), backward, clip, AdamW."""

    def __init__(self, model, ids, device):
        self.model, self.ids, self.device = model, ids, device
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)

    def __call__(self):
        self.model.train()
        with autocast(self.device):
            loss = self.model(input_ids=self.ids, labels=self.ids, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


class Forward:
    """Inference forward of a full sequence: logits, no cache, no grad."""

    def __init__(self, model, ids, device):
        self.model, self.ids, self.device = model, ids, device

    @torch.no_grad()
    def __call__(self):
        self.model.eval()
        with autocast(self.device):
            self.model(input_ids=self.ids, use_cache=False)


def alternated(jobs: dict, clock: Clock, warmup: int, repeats: int, bar) -> dict[str, float]:
    """Median seconds of each job, runs interleaved (A B C A B C ...) so drifts in machine load hit all alike."""
    for _ in range(warmup):
        for fn in jobs.values():
            fn()
            bar.update()
    times = {name: [] for name in jobs}
    for _ in range(repeats):
        for name, fn in jobs.items():
            times[name].append(clock(fn))
            bar.update()
    return {name: statistics.median(ts) for name, ts in times.items()}


# ------------------------------------------------------------------------------------------------ memory


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{field}:\s+(\d+) kB", f.read()).group(1)) * 1024


def _memory_worker(spec: ModelSpec, batch: int, seq: int, threads: int, queue) -> None:
    """In a fresh process: peak resident memory of building the model and two training steps, over the baseline.

    The kernel's high-water mark (VmHWM) is reset first (`/proc/self/clear_refs`), so the peak of importing torch
    and transformers does not count; a tiny model of the same kind is trained once before, so neither does the
    first use of the kernels' code and buffers."""
    torch.set_num_threads(threads)
    warm = spec.tiny().build()
    TrainStep(warm, make_batch(warm, 2, 16, "cpu"), torch.device("cpu"))()  # first-use library pages
    del warm
    base = _status_bytes("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # no reset: the peak then includes the imports, which only overstates small models
    model = spec.build()
    step = TrainStep(model, make_batch(model, batch, seq, "cpu"), torch.device("cpu"))
    step()
    step()
    queue.put(_status_bytes("VmHWM") - base)


def peak_training_memory(spec: ModelSpec, batch: int, seq: int, device: torch.device, threads: int) -> float:
    """Bytes: parameters, gradients, AdamW state, activations and temporaries at their peak."""
    if device.type == "cuda":
        model = spec.build().to(device)
        step = TrainStep(model, make_batch(model, batch, seq, device), device)
        step()
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        peak = torch.cuda.max_memory_allocated(device)
        del model, step
        torch.cuda.empty_cache()
        return float(peak)
    if not Path("/proc/self/status").exists():
        return float("nan")  # resident-set accounting needs Linux
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_memory_worker, args=(spec, batch, seq, threads, queue))
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"memory measurement of {spec.name} at {batch}x{seq} failed (exit code {proc.exitcode})")
    return float(queue.get())


# ------------------------------------------------------------------------------------------------ scan, decode


def scan_tensors(batch: int, seq: int, dim: int, ns: int, device):
    """The SSM's factored inputs: delta, A, delta * u [B, S, D] / [D, Ns] / [B, S, D]; Bt, Ct [B, S, Ns]."""
    g = torch.Generator().manual_seed(2)
    delta = torch.rand(batch, seq, dim, generator=g) * 0.1
    a = -torch.rand(dim, ns, generator=g)
    du = torch.randn(batch, seq, dim, generator=g)
    b, c = torch.randn(batch, seq, ns, generator=g), torch.randn(batch, seq, ns, generator=g)
    return tuple(t.to(device) for t in (delta, a, du, b, c))


def _materialised(scan):
    """A scan over [B, S, D, Ns] tensors, fed from the factored inputs (the materialising is part of its cost)."""
    def run(delta, a, du, b, c):
        return scan(delta.unsqueeze(-1) * a, du.unsqueeze(-1) * b.unsqueeze(-2), c)

    return run


SCAN_VARIANTS = {
    "sequential": _materialised(selective_scan_reference), "chunked": _materialised(selective_scan),
    "recurrent": recurrent_scan,
}


def scan_jobs(batch, seq, dim, ns, device):
    """Forward, and forward + backward, of each scan variant."""
    tensors = scan_tensors(batch, seq, dim, ns, device)

    def forward(fn):
        @torch.no_grad()
        def run():
            fn(*tensors)

        return run

    def backward(fn):
        def run():
            leaves = [t.clone().requires_grad_(True) for t in tensors]
            y, h = fn(*leaves)
            (y.sum() + h.sum()).backward()

        return run

    jobs = {}
    for name, fn in SCAN_VARIANTS.items():
        jobs[f"{name} forward"], jobs[f"{name} fwd+bwd"] = forward(fn), backward(fn)
    return jobs


class Decode:
    """Greedy cached generation of exactly `new_tokens` tokens after a `prompt`-token prompt."""

    def __init__(self, model, prompt: int, new_tokens: int, device):
        self.model, self.new_tokens = model.eval(), new_tokens
        self.ids = make_batch(model, 1, prompt, device)
        self.device = device

    @torch.no_grad()
    def __call__(self):
        with autocast(self.device):
            self.model.generate(
                self.ids, attention_mask=torch.ones_like(self.ids), max_new_tokens=self.new_tokens,
                min_new_tokens=self.new_tokens, do_sample=False, use_cache=True, pad_token_id=0,
            )


# ------------------------------------------------------------------------------------------------ report


def describe_machine(device: torch.device) -> str:
    import transformers

    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        hw = f"{props.name}, {props.total_memory / 2**30:.0f} GiB"
    else:
        cpu = platform.processor() or platform.machine()
        if Path("/proc/cpuinfo").exists():
            found = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
            cpu = found.group(1).strip() if found else cpu
        ram = ""
        if Path("/proc/meminfo").exists():
            kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
            ram = f", {kb / 2**20:.0f} GiB RAM"
        hw = f"CPU {cpu}, {os.cpu_count()} cores visible, {torch.get_num_threads()} torch threads{ram}"
    return (f"{hw}; torch {torch.__version__}, transformers {transformers.__version__}, "
            f"python {platform.python_version()}")


def fmt_ratio(value: float, target: float | None = None) -> str:
    if value != value:  # nan
        return "n/a"
    text = f"{value:.2f}x"
    if target is not None:
        text += " ✓" if value <= target else " ✗"
    return text


def section_heading(device: torch.device, args) -> str:
    precision = "bf16 autocast" if device.type == "cuda" else "fp32"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    return f"## {name}, {precision}, {args.preset}"


def render(results: dict, args, device: torch.device, command: str) -> str:
    lines = [section_heading(device, args), "", f"Machine: {describe_machine(device)}.  ",
             f"Command: `{command}` ({args.repeats} timed runs per cell after {args.warmup} warm-up, median; "
             f"ratios are DAWN / GPT-2 from the same run; ✓/✗ against the targets of issue 3/4).", ""]
    if "train" in results:
        lines += ["### Training step and forward", "",
                  "| B x S | model | train step | vs GPT-2 | train tokens/s | forward | vs GPT-2 | peak train memory | vs GPT-2 |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for shape, per_model in results["train"].items():
            base = per_model["GPT-2"]
            for name, r in per_model.items():
                is_base = name == "GPT-2"
                train_target = TARGETS["train_cumulative"] if "cumulative" in name else TARGETS["train"]
                mem = r.get("memory", float("nan"))
                mem_text = "n/a" if mem != mem else f"{mem / 2**30:.2f} GiB"
                if r["train"] != r["train"]:  # training step not measured (--skip train)
                    lines.append(f"| {shape} | {name} | n/a | n/a | n/a | n/a | n/a | {mem_text} | "
                                 f"{'1' if is_base else fmt_ratio(mem / base.get('memory', float('nan')))} |")
                    continue
                lines.append(
                    f"| {shape} | {name} | {r['train'] * 1e3:.0f} ms | "
                    f"{'1' if is_base else fmt_ratio(r['train'] / base['train'], train_target)} | "
                    f"{r['tokens'] / r['train']:.0f} | {r['forward'] * 1e3:.0f} ms | "
                    f"{'1' if is_base else fmt_ratio(r['forward'] / base['forward'], TARGETS['forward'])} | "
                    f"{mem_text} | "
                    f"{'1' if is_base else fmt_ratio(mem / base.get('memory', float('nan')), TARGETS['memory'])} |")
        lines.append("")
    if "scan" in results:
        r, (b, s, d, n) = results["scan"], results["scan_shape"]
        used = scan_path(device)  # what the model runs here
        lines += [f"### Selective scan (cumulative mode), B={b}, S={s}, D={d}, Ns={n}", "",
                  f"The model runs the {used} scan on this device; speed-up = sequential / {used}.", "",
                  "| pass | sequential loop | chunked scan | recurrent scan | speed-up |", "|---|---|---|---|---|"]
        for kind in ("forward", "fwd+bwd"):
            seq_t, chunk_t, rec_t = (r[f"{v} {kind}"] for v in ("sequential", "chunked", "recurrent"))
            speedup = seq_t / r[f"{used} {kind}"]
            mark = " ✓" if speedup >= TARGETS["scan_speedup"] else " ✗"
            lines.append(f"| {kind} | {seq_t * 1e3:.1f} ms | {chunk_t * 1e3:.1f} ms | {rec_t * 1e3:.1f} ms | "
                         f"{speedup:.1f}x{mark} |")
        lines.append("")
    if "decode" in results:
        lines += ["### Cached greedy decoding, batch 1", "",
                  "| new tokens (prompt) | model | time | tokens/s | vs GPT-2 |", "|---|---|---|---|---|"]
        for label, per_model in results["decode"].items():
            base = per_model["GPT-2"]
            for name, (seconds, n_new) in per_model.items():
                ratio = "1" if name == "GPT-2" else fmt_ratio(seconds / base[0], TARGETS["decode"])
                lines.append(f"| {label} | {name} | {seconds:.2f} s | {n_new / seconds:.1f} | {ratio} |")
        lines.append("")
    if "profile" in results:
        lines += ["### Where a DAWN training step spends its time", "", "```", results["profile"], "```", ""]
    return "\n".join(lines)


def write_section(path: Path, section: str) -> None:
    """Replace the `## ...` section with the same heading in `path` (or append it), keeping everything else."""
    heading = section.splitlines()[0]
    text = path.read_text() if path.exists() else "# Benchmarks\n\nWritten by `scripts/benchmark.py`.\n"
    parts = re.split(r"(?m)^(?=## )", text)
    kept = [p for p in parts if p.splitlines()[:1] != [heading]]
    replaced = len(kept) != len(parts)
    if replaced:
        index = next(i for i, p in enumerate(parts) if p.splitlines()[:1] == [heading])
        kept.insert(index, section.rstrip("\n") + "\n\n")
    else:
        kept[-1] = kept[-1].rstrip("\n") + "\n\n"
        kept.append(section.rstrip("\n") + "\n")
    path.write_text("".join(kept).rstrip("\n") + "\n")


# ------------------------------------------------------------------------------------------------ main


def parse_shape(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)x(\d+)", text)
    if not match or int(match.group(1)) < 1 or int(match.group(2)) < 1:
        raise argparse.ArgumentTypeError(f"shape {text!r} is not BATCHxSEQ, e.g. 4x256")
    return int(match.group(1)), int(match.group(2))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--shapes", nargs="+", type=parse_shape, default=[(4, 256), (8, 512)],
                   help="BATCHxSEQ shapes for training step / forward / memory (default: 4x256 8x512)")
    p.add_argument("--modes", nargs="+", choices=["token", "cumulative"], default=["token", "cumulative"],
                   help="DAWN routing modes to measure (default: both)")
    p.add_argument("--preset", default="dawn-39m", help="DAWN preset (dawn-39m; dawn-tiny for smoke runs)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per cell, median reported (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs per cell first (default 1)")
    p.add_argument("--decode_tokens", nargs="+", type=int, default=[128, 512],
                   help="new tokens for the decoding benchmark; capped so prompt + new fits the position table")
    p.add_argument("--prompt_tokens", type=int, default=8, help="prompt length for decoding (default 8)")
    p.add_argument("--scan_batch", type=int, default=8, help="batch of the scan benchmark (S = 512, capped at "
                                                              "the preset's positions)")
    p.add_argument("--skip", nargs="*", choices=SECTIONS, default=[], help="sections to leave out")
    p.add_argument("--profile", action="store_true", help="add the top ops of one DAWN training step")
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda[:i]")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--output", type=Path, default=None,
                   help="markdown file whose section for this device is replaced (default: print only)")
    return p


def profile_table(spec: ModelSpec, batch: int, seq: int, device) -> str:
    from torch.profiler import ProfilerActivity, profile

    model = spec.build().to(device)
    step = TrainStep(model, make_batch(model, batch, seq, device), device)
    step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        step()
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return f"{spec.name}, one training step at {batch}x{seq}\n" + prof.key_averages().table(sort_by=key, row_limit=15)


def main(argv=None) -> str:
    args = build_parser().parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        raise SystemExit(f"--repeats must be >= 1 and --warmup >= 0 (got {args.repeats}, {args.warmup})")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: CUDA is not available on this machine")
    specs = model_specs(args)
    positions = DawnConfig.from_preset(args.preset).max_position_embeddings
    for batch, seq in args.shapes:
        if seq > positions:
            raise SystemExit(f"--shapes {batch}x{seq}: sequence longer than the position table ({positions})")

    todo = [s for s in SECTIONS if s not in args.skip]
    per_cell = args.warmup + args.repeats
    total = 0
    if "train" in todo:
        total += len(args.shapes) * len(specs) * 2 * per_cell
    if "memory" in todo:
        total += len(args.shapes) * len(specs)
    if "scan" in todo:
        total += 4 * per_cell
    if "decode" in todo:
        total += len(args.decode_tokens) * len(specs) * per_cell
    bar = tqdm(total=total, desc="benchmark", unit="run")
    clock = Clock(device)
    results: dict = {}

    if "train" in todo or "memory" in todo:
        results["train"] = {}
        for batch, seq in args.shapes:
            shape = f"{batch} x {seq}"
            cell = results["train"][shape] = {spec.name: {"tokens": batch * seq} for spec in specs}
            if "train" in todo:
                models = {spec.name: spec.build().to(device) for spec in specs}
                ids = {name: make_batch(m, batch, seq, device) for name, m in models.items()}
                bar.set_postfix_str(f"train step {shape}")
                steps = alternated({n: TrainStep(m, ids[n], device) for n, m in models.items()}, clock,
                                   args.warmup, args.repeats, bar)
                bar.set_postfix_str(f"forward {shape}")
                fwd = alternated({n: Forward(m, ids[n], device) for n, m in models.items()}, clock,
                                 args.warmup, args.repeats, bar)
                for name in models:
                    cell[name].update(train=steps[name], forward=fwd[name])
                del models, ids
            else:
                for name in cell:
                    cell[name].update(train=float("nan"), forward=float("nan"))
            if "memory" in todo:
                for spec in specs:
                    bar.set_postfix_str(f"memory {spec.name} {shape}")
                    cell[spec.name]["memory"] = peak_training_memory(
                        spec, batch, seq, device, args.threads or torch.get_num_threads())
                    bar.update()

    if "scan" in todo:
        cfg = DawnConfig.from_preset(args.preset)
        shape = (args.scan_batch, min(512, positions), cfg.hidden_size, cfg.state_dim)
        bar.set_postfix_str("selective scan")
        results["scan"] = alternated(scan_jobs(*shape, device), clock, args.warmup, args.repeats, bar)
        results["scan_shape"] = shape

    if "decode" in todo:
        results["decode"] = {}
        models = {spec.name: spec.build().to(device) for spec in specs}
        for requested in args.decode_tokens:
            new = min(requested, positions - args.prompt_tokens)
            label = f"{new} ({args.prompt_tokens})"
            bar.set_postfix_str(f"decode {new}")
            times = alternated({n: Decode(m, args.prompt_tokens, new, device) for n, m in models.items()},
                               clock, args.warmup, args.repeats, bar)
            results["decode"][label] = {name: (t, new) for name, t in times.items()}
        del models
    bar.close()

    if args.profile:
        batch, seq = args.shapes[0]
        results["profile"] = profile_table(specs[0], batch, seq, device)

    command = "python scripts/benchmark.py " + " ".join(sys.argv[1:] if argv is None else argv)
    section = render(results, args, device, command.strip())
    print(section)
    if args.output is not None:
        write_section(args.output, section)
        print(f"wrote {args.output}", file=sys.stderr)
    return section


if __name__ == "__main__":
    main()
