"""The seed tutorial's script (docs/examples/tutorial.py): custom rtgym env, actor, compressor, memory and agent in
one script, the worker in a thread, `worker.run(test_episode_interval=10)` as the tutorial writes it; it trains and
every rebuilt transition passes the CRC check, also after the unrecorded test episodes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import subprocess_env

SCRIPT = Path(__file__).resolve().parents[1] / "docs" / "examples" / "tutorial.py"


@pytest.mark.slow
def test_tutorial_script_trains_and_passes_its_crc_check_across_test_episodes(tmrl_home: Path) -> None:
    env = subprocess_env(tmrl_home)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--short", "--crc-debug"], env=env, capture_output=True, text=True, timeout=300
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-5000:]
    assert "tutorial: training complete" in proc.stdout
    assert "CRC check failed" not in output
    passed = re.findall(r"CRC check passed\. Time step: (\d+), since reset: (\d+)", output)
    # every transition of every batch is checked: 2 rounds x 25 steps x 32 transitions
    assert len(passed) >= 2 * 25 * 32
    assert any(int(since) == 1 for _, since in passed), "transitions right after a reset were checked too"
    # --short: 400 env steps of 10-step episodes before training starts, a test episode every 10 training episodes;
    # the tutorial's memory rebuilds reset action buffers from the previous recorded episode, so every recorded
    # episode after a test episode is a case the CRC check would catch
    assert len(re.findall(r"worker: test episode return", output)) >= 3
    assert re.search(r"epoch 0 round 1: \d+ env steps, 50 training steps", output)
    assert (tmrl_home / "checkpoints" / "tutorial_t.safetensors").is_file()
    assert (tmrl_home / "weights" / "tutorial_t.safetensors").is_file()
