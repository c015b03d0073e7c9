"""The throughput suite (benchmarks/gpu_suite.sh -> bench_throughput.py) end to end at its tiny size on a CPU.

Speed figures are not asserted here (shared, noisy machines: they come from the benchmark's own runs,
docs/performance.md); what is tested is that the suite runs every part, that the three labelling paths
give the same values, and that it writes the JSON, the table and the docs section it promises.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from rlmec_core.sampling import vllm_available

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "benchmarks" / "gpu_suite.sh"


def run_suite(out: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SIZE": "tiny", "OUT": str(out), "PYTHON": os.environ.get("PYTHON", _python())}
    return subprocess.run([str(SUITE), *args], env=env, capture_output=True, text=True, timeout=900)


def _python() -> str:
    import sys

    return sys.executable


@pytest.mark.slow
def test_gpu_suite_runs_at_tiny_size_and_writes_json_table_and_docs(tmp_path):
    doc = tmp_path / "performance.md"
    doc.write_text("# Performance\n\n<!-- bench:tiny -->\nold table\n<!-- /bench:tiny -->\n\nafter\n")
    proc = run_suite(tmp_path / "out", "--docs", str(doc))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "bench_throughput_tiny.json").read_text())
    parts = summary["parts"]
    want = {"sample_hf", "label_hf", "label_one", "train_rl", "train_sft"} | (
        {"sample_vllm", "label_vllm"} if vllm_available() else set())
    assert set(parts) == want
    for name, part in parts.items():
        assert part["tokens"] > 0 and part["tokens_per_s"] > 0 and part["peak_rss_gb"] > 0, name
    assert parts["train_rl"]["tokens"] == parts["train_sft"]["tokens"]  # the same tokens in both steps
    assert {"labelling_hf_over_one_at_a_time", "rl_step_time_over_sft"} <= set(summary["ratios"])
    for name, agreement in summary["agreement"].items():  # every labelling path equals the naive one
        assert agreement["same_flags_p_lt_0.5"] >= 0.999 and agreement["max_abs_p_diff"] < 1e-4, (name, agreement)
    if vllm_available():
        assert "sampling_vllm_over_hf" in summary["ratios"] and "label_vllm" in summary["agreement"]
    assert summary["parts"]["train_rl"]["flops_per_token"] > 6 * summary["params"]
    table = (tmp_path / "out" / "bench_throughput_tiny.md").read_text()
    assert "| sampling |" in table and "RL step time / SFT step time" in table
    text = doc.read_text()
    assert "old table" not in text and table in text and text.endswith("after\n")


def test_bad_arguments_are_refused_with_the_reason(tmp_path):
    proc = run_suite(tmp_path, "--parts", "sample_hf,warp_drive")
    assert proc.returncode == 2 and "unknown parts ['warp_drive']" in proc.stderr
    doc = tmp_path / "no_markers.md"
    doc.write_text("# nothing to replace\n")
    import sys
    from importlib import util

    spec = util.spec_from_file_location("bench_throughput", ROOT / "benchmarks" / "bench_throughput.py")
    mod = sys.modules.setdefault("bench_throughput", util.module_from_spec(spec))
    spec.loader.exec_module(mod)
    with pytest.raises(SystemExit, match="no_markers.md: no <!-- bench:tiny -->"):
        mod.update_docs(doc, "tiny", "table\n")
