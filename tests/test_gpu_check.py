"""benchmarks/gpu_check.py, the script meant for one short run on a GPU machine, runs on a CPU as well: its table and
its JSON figures, with the tiny setting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.timeout(900)  # about a minute on 2 idle cores; much longer when the machine is shared
def test_gpu_check_runs_on_cpu_and_writes_its_figures(tmp_path: Path) -> None:
    env = {**os.environ, "OUT": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--tiny", "--device", "cpu"],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "GPU check on cpu" in proc.stdout and "REDQ critic updates, N=10, batched ensemble" in proc.stdout
    report = json.loads((tmp_path / "gpu.json").read_text())
    assert report["device"] == "cpu" and report["torch"]
    assert report["sac"]["eager"]["updates_per_s"] > 0
    assert report["redq_ensemble"]["batched_updates_per_s"] > 0 and report["redq_ensemble"]["loop_updates_per_s"] > 0
    for kind in ("critic only", "critic + actor"):
        figures = report["redq_flops"][kind]
        # N=10 critics of 256x256 on batch 256: about a GFLOP per critic update, more with the actor's
        assert 1.0e3 < figures["mflop_per_call"] < 2.5e3
        assert 0 < figures["share_of_matmul_rate"]
    assert report["cpu_sac_updates_per_s_by_threads"]["1"] > 0
