"""scripts/benchmark.py runs end to end on tiny models and keeps other machines' sections of its table."""

import re

import pytest
from conftest import import_script

benchmark = import_script("benchmark")


def test_benchmark_smoke_run_writes_a_complete_section(tmp_path):
    out = tmp_path / "benchmarks.md"
    out.write_text("# Benchmarks\n\n## NVIDIA H100, bf16 autocast, dawn-39m\n\n| kept | row |\n")
    section = benchmark.main([
        "--preset", "dawn-tiny", "--shapes", "1x16", "--repeats", "1", "--warmup", "0", "--decode_tokens", "3",
        "--prompt_tokens", "4", "--scan_batch", "1", "--skip", "memory", "--output", str(out),
    ])
    text = out.read_text()
    assert "## NVIDIA H100, bf16 autocast, dawn-39m" in text and "| kept | row |" in text
    assert section.splitlines()[0] == "## CPU, fp32, dawn-tiny" and section in text
    rows = [line for line in section.splitlines() if line.startswith("| 1 x 16 |")]
    assert [r.split("|")[2].strip() for r in rows] == ["DAWN token", "DAWN cumulative", "GPT-2"]
    for row in rows[:2]:  # measured times and a ratio to GPT-2 in every DAWN row
        assert re.search(r"\| \d+ ms \| \d+\.\d\dx [✓✗] \|", row), row
    assert re.search(r"\| fwd\+bwd \| [\d.]+ ms \| [\d.]+ ms \| [\d.]+ ms \| [\d.]+x [✓✗] \|", section)
    assert len([line for line in section.splitlines() if line.startswith("| 3 (4) |")]) == 3

    # a second run for the same device replaces its section instead of appending another
    benchmark.write_section(out, section.replace("DAWN token", "DAWN token (again)"))
    text = out.read_text()
    assert text.count("## CPU, fp32, dawn-tiny") == 1 and "DAWN token (again)" in text
    assert "| kept | row |" in text


def test_benchmark_rejects_bad_shapes():
    with pytest.raises(SystemExit):
        benchmark.main(["--shapes", "4by256"])
    with pytest.raises(SystemExit, match="position table"):
        benchmark.main(["--preset", "dawn-tiny", "--shapes", "1x4096", "--skip", "scan", "decode", "memory"])
