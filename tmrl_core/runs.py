"""The runs of a data folder: their status, and a summary of each (``tmrl runs``); their curves (``tmrl plot``).

A run's folder ``<data>/runs/<run>/`` holds ``run.json`` (env, algo, settings sections), ``metrics.jsonl`` (one
record per round) and ``status.json``, which the trainer writes when it starts (``running``, with its process id and
host) and when it ends: ``finished`` (budget or epochs spent), ``interrupted`` (Ctrl-C, SIGTERM) or ``failed`` (an
error, named in ``error``). A run whose status still says ``running`` but whose process is gone (on this host) was
killed or crashed: it is reported as ``failed``.

This module imports neither torch nor numpy.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tmrl_core.files import atomic_write_text
from tmrl_core.loggers import METRICS_FILE
from tmrl_core.paths import subdir

STATUS_FILE = "status.json"
RUN_INFO_FILE = "run.json"
STATUSES = ("running", "finished", "interrupted", "failed")


def _runs_root() -> Path:
    return subdir("runs", create=False)


def write_status(folder: Path, status: str, *, error: str | None = None) -> None:
    """Record ``status`` for the run in ``folder`` (``running`` also records this process and the start time)."""
    if status not in STATUSES:
        raise ValueError(f"status {status!r} is not one of {STATUSES}")
    path = folder / STATUS_FILE
    now = time.time()
    previous = _read_json(path) if status != "running" else {}
    data = {
        "status": status,
        "pid": previous.get("pid", os.getpid()),
        "host": previous.get("host", socket.gethostname()),
        "started": previous.get("started", now),
        "updated": now,
        "ended": None if status == "running" else now,
        "error": error,
    }
    atomic_write_text(path, json.dumps(data, indent=2), fsync=False)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    except OSError:
        return False
    return True


def effective_status(data: dict[str, Any]) -> tuple[str, str | None]:
    """``(status, error)`` of a ``status.json``: ``running`` with a dead process on this host is ``failed``."""
    status = data.get("status")
    error = data.get("error")
    if status not in STATUSES:
        return "unknown", None
    if status == "running" and data.get("host") == socket.gethostname():
        pid = data.get("pid")
        if not isinstance(pid, int) or not _alive(pid):
            return "failed", "the process ended without recording an end (killed, or crashed)"
    return status, error


@dataclass
class RunSummary:
    """One line of ``tmrl runs``."""

    name: str
    env: str | None
    algo: str | None
    status: str
    env_steps: int
    training_steps: int
    best_test_return: float | None
    last_test_return: float | None
    last_train_return: float | None
    rounds: int
    started: float | None
    updated: float | None
    error: str | None
    folder: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def iter_records(path: Path) -> Iterator[dict[str, Any]]:
    """The records of a ``metrics.jsonl``, streamed (a line that does not parse, e.g. one cut by a crash, is
    skipped)."""
    try:
        f = open(path, encoding="utf-8")  # closed below
    except OSError:
        return
    with f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                yield record


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def summarize(folder: Path) -> RunSummary:
    """The summary of the run in ``folder`` (missing files give empty fields, never an error)."""
    info = _read_json(folder / RUN_INFO_FILE)
    status_data = _read_json(folder / STATUS_FILE)
    status, error = effective_status(status_data) if status_data else ("unknown", None)
    env_steps = training_steps = rounds = 0
    best = last_test = last_train = None
    last_time = None
    for record in iter_records(folder / METRICS_FILE):
        rounds += 1
        env_steps = int(_number(record.get("env_steps")) or env_steps)
        training_steps = int(_number(record.get("training_steps")) or training_steps)
        test = _number(record.get("return_test"))
        if test is not None:
            last_test = test
            best = test if best is None else max(best, test)
        train = _number(record.get("return_train"))
        if train is not None:
            last_train = train
        last_time = _number(record.get("time")) or last_time
    updated = status_data.get("updated") if status_data else None
    if last_time is not None and (updated is None or last_time > updated):
        updated = last_time
    if updated is None:
        try:
            updated = folder.stat().st_mtime
        except OSError:
            updated = None
    return RunSummary(
        name=folder.name,
        env=info.get("env"),
        algo=info.get("algo"),
        status=status,
        env_steps=env_steps,
        training_steps=training_steps,
        best_test_return=best,
        last_test_return=last_test,
        last_train_return=last_train,
        rounds=rounds,
        started=status_data.get("started") if status_data else None,
        updated=updated,
        error=error,
        folder=str(folder),
    )


def list_runs(root: Path | None = None) -> list[RunSummary]:
    """Every run of the data folder (a folder of ``<data>/runs`` with a ``run.json``, ``status.json`` or
    ``metrics.jsonl``), oldest update first."""
    root = root if root is not None else _runs_root()
    if not root.is_dir():
        return []
    runs = []
    for folder in root.iterdir():
        if not folder.is_dir():
            continue
        if not any((folder / name).is_file() for name in (RUN_INFO_FILE, STATUS_FILE, METRICS_FILE)):
            continue
        runs.append(summarize(folder))
    return sorted(runs, key=lambda r: (r.updated or 0.0, r.name))
