"""Learning curves of the benchmark scripts, drawn with ``tmrl plot`` (the command users have) for docs/benchmarks.md.

Each side of a comparison and each seed becomes a run folder ``<home>/runs/<name>/metrics.jsonl`` holding one record
per evaluation (``env_steps``, ``return_test``: the benchmark's own evaluation, the same for both sides), so that
``tmrl plot 'a-*' 'b-*' --group`` draws each side's mean and spread over its seeds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

DOCS_IMG = Path(__file__).resolve().parent.parent / "docs" / "img"


def write_curve(home: Path, run: str, points: Iterable[tuple[int, float]]) -> Path:
    """``points`` = ``(env steps, mean test return)`` as the run ``run`` of the data folder ``home``."""
    folder = home / "runs" / run
    folder.mkdir(parents=True, exist_ok=True)
    now = time.time()
    lines = [json.dumps({"env_steps": int(s), "return_test": float(r), "time": now}) for s, r in points]
    path = folder / "metrics.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    return path


def plot(home: Path, patterns: list[str], png: Path, title: str) -> int:
    """``tmrl plot PATTERNS --group -m return_test -o PNG`` on the data folder ``home``; returns its exit status."""
    script = Path(sys.executable).with_name("tmrl")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "tmrl_core"]
    command += ["plot", *patterns, "--group", "-m", "return_test", "-o", str(png), "--title", title]
    env = {**os.environ, "TMRL_HOME": str(home)}
    print("$", " ".join(command[1:] if script.exists() else command), flush=True)
    return subprocess.run([*command], env=env, check=False).returncode
