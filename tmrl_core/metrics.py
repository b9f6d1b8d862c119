"""Per-round training metrics: one JSON object per line in ``<data>/runs/<run>/metrics.jsonl``, and optionally wandb.

Each line is one round's record (losses from ``agent.train``, train/test returns and episode lengths reported by
the workers, env steps, training steps, timings) plus ``time`` (Unix seconds). A resumed run appends to the same
file. ``wandb`` is imported only when enabled; it honours ``WANDB_MODE`` (``offline`` works without a network).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("tmrl.metrics")

METRICS_FILE = "metrics.jsonl"


def run_dir(run_name: str, *, create: bool = True) -> Path:
    """``<data>/runs/<run>/``."""
    from tmrl_core.paths import subdir

    path = subdir("runs", create=create) / safe_name(run_name)
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def safe_name(name: str) -> str:
    """``name`` usable as a folder name (anything but letters, digits, ``-_.`` becomes ``_``)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "default"


def read_metrics(run_name: str) -> list[dict[str, Any]]:
    """Every record written for ``run_name`` so far (lines that do not parse are skipped)."""
    path = run_dir(run_name, create=False) / METRICS_FILE
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):
        return _clean(value.item())
    return value


class MetricsLogger:
    """Writes round records to the run's JSONL file, and to wandb when enabled.

    Args:
        run_name: names the folder ``<data>/runs/<run>/``.
        settings: the settings (``wandb`` section: project, entity, key, mode).
        wandb: log to wandb as well (default ``settings.wandb.enabled``).
        entity, project, run_id, key: override the wandb settings (``run_id`` defaults to the run name, so that a
            resumed run continues the same wandb run).
        config: the run's configuration, recorded by wandb.
    """

    def __init__(
        self,
        run_name: str,
        *,
        settings: Any = None,
        wandb: bool | None = None,
        entity: str | None = None,
        project: str | None = None,
        run_id: str | None = None,
        key: str | None = None,
        config: dict[str, Any] | None = None,
    ) -> None:
        self.run_name = run_name
        self.folder = run_dir(run_name)
        self.path = self.folder / METRICS_FILE
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        ws = getattr(settings, "wandb", None)
        enabled = bool(ws.enabled if (wandb is None and ws is not None) else wandb)
        self._wandb: Any = None
        if enabled:
            self._start_wandb(ws, entity, project, run_id, key, config)

    def _start_wandb(
        self, ws: Any, entity: str | None, project: str | None, run_id: str | None, key: str | None, config: Any
    ) -> None:
        import wandb

        secret = key or (ws.key.get_secret_value() if ws is not None and ws.key is not None else None)
        if secret and not os.environ.get("WANDB_API_KEY"):
            os.environ["WANDB_API_KEY"] = secret
        mode = ws.mode if ws is not None else None
        self._wandb = wandb.init(
            project=project or (ws.project if ws is not None else "tmrl"),
            entity=entity or (ws.entity if ws is not None else None),
            id=run_id or self.run_name,
            name=self.run_name,
            resume="allow",
            dir=str(self.folder),
            config=config or {},
            mode=mode,
            reinit="finish_previous",
        )

    def log(self, record: dict[str, Any]) -> None:
        """Append one round's record."""
        clean = {k: _clean(v) for k, v in record.items()}
        clean.setdefault("time", time.time())
        self._file.write(json.dumps(clean) + "\n")
        self._file.flush()
        if self._wandb is not None:
            numbers = {k: v for k, v in clean.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            self._wandb.log(numbers, step=int(clean.get("training_steps", 0)))

    def close(self) -> None:
        """Flush and close; finish the wandb run. Idempotent."""
        if not self._file.closed:
            self._file.close()
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
