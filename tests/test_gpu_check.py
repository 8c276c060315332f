"""scripts/gpu_check.py on the CPU with --quick (tiny sizes): every part written, and the budget skips parts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"


def _check(tmp_path: Path, *args: str) -> tuple[dict, str]:
    out = tmp_path / "results"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--device", "cpu", "--out", str(out),
                           "--work", str(tmp_path / "work"), *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "gpu_check.json").read_text()), (out / "gpu_check.md").read_text()


def test_quick_check_on_the_cpu_writes_every_part(tmp_path):
    data, summary = _check(tmp_path, "--methods", "anomalyclip")
    parts = data["parts"]
    assert list(parts) == ["environment", "roofline", "methods", "precision", "determinism", "estimate"]
    assert all(part["status"] == "done" for part in parts.values()), {k: v["status"] for k, v in parts.items()}
    assert set(parts["environment"]["matmul"]) == {"fp32", "tf32", "bf16", "fp16"}
    assert all(m["gflops"] > 0 for m in parts["environment"]["matmul"].values())
    for precision in ("bf16", "fp32"):
        roof = parts["roofline"]["by_precision"][precision]
        assert roof["flops_per_image"]["scrapbench_math"] > 0 and roof["fraction_of_peak"] > 0
        method = parts["methods"]["by_method"]["anomalyclip"]["by_precision"][precision]
        assert method["predict_images_per_s"] > 0 and method["train_step"]["seconds"] > 0
        assert isinstance(method["goal"]["pass"], bool) and method["overhead_ratio"] > 0
    roof_goal = parts["roofline"]["by_precision"]["bf16"]["goal"]["pass"]
    assert isinstance(roof_goal, bool)

    def goal(precision: str) -> bool:
        return parts["methods"]["by_method"]["anomalyclip"]["by_precision"][precision]["goal"]["pass"]

    compared = parts["precision"]["by_method"]["anomalyclip"]
    assert compared["map_correlation_min"] > 0.999 and compared["max_abs_delta_pp"] < 0.5, compared
    assert compared["images_compared"] > 0
    assert parts["determinism"]["precision"] == "fp32"  # auto on the CPU
    assert parts["determinism"]["by_method"]["anomalyclip"] == {
        "identical_metrics": True, "identical_maps": True, "nondeterministic_ops": [], "mark": ""}
    scenarios = parts["estimate"]["scenarios"]
    assert [s["precision"] for s in scenarios] == ["bf16", "fp32"]
    assert all(set(s["wall_hours"]) == {"1 GPUs", "8 GPUs", "32 GPUs"} for s in scenarios)
    assert data["goals"] == {"bf16 encoder >= 40% of the bf16 matmul peak": roof_goal,
                             "anomalyclip bf16 <= 1.3x its bare encoder": goal("bf16"),
                             "anomalyclip fp32 <= 1.3x its bare encoder": goal("fp32")}
    for heading in ("1. Environment", "2. Roofline", "3. Methods", "4. Precision", "5. Determinism", "6. Paper grid"):
        assert heading in summary


def test_what_does_not_fit_the_budget_is_skipped_and_said(tmp_path):
    data, summary = _check(tmp_path, "--methods", "anomalyclip", "--budget-s", "3")
    parts = data["parts"]
    assert parts["environment"]["status"] == "done"
    for name in ("roofline", "methods", "precision", "determinism"):
        assert parts[name]["status"] == "skipped" and "--budget-s 3" in parts[name]["reason"], parts[name]
    assert parts["estimate"]["status"] == "skipped"  # out of time, or no measured rate to estimate from
    assert "| roofline | skipped |" in summary


def test_no_cuda_device_is_one_line_and_exit_code_2(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is there")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cuda", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "no CUDA device" in proc.stderr
    assert not (tmp_path / "gpu_check.json").exists()
