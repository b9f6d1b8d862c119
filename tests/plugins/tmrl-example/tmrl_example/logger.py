"""The example loggers: one that keeps what it receives in files of the run's folder, one that fails.

Imported only when a run chooses them (``--log example-recorder``), like every factory given as a string.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

RECORDS_FILE = "example-records.jsonl"
INFO_FILE = "example-info.json"


class RecorderLogger:
    """Writes the run's info to ``example-info.json`` once, every record to ``example-records.jsonl``, and
    ``"closed": true`` into the info file when the run ends."""

    def __init__(self, run: Any, settings: Any = None) -> None:
        self.info_path = run.folder / INFO_FILE
        self.info = {"name": run.name, "env": run.env, "algo": run.algo, "config": dict(run.config), "closed": False}
        self.info_path.write_text(json.dumps(self.info))
        self._file = open(run.folder / RECORDS_FILE, "a", encoding="utf-8")  # closed in close()

    def log(self, record: Mapping[str, Any]) -> None:
        self._file.write(json.dumps(dict(record)) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()
        self.info["closed"] = True
        self.info_path.write_text(json.dumps(self.info))


class FaultySettings(BaseModel):
    """The ``example_faulty`` settings section."""

    model_config = ConfigDict(extra="forbid")

    fail_after: int = Field(1, ge=0, description="Records accepted before every further one raises.")


class FaultyLogger:
    """Accepts ``fail_after`` records, then raises on every one (a sink whose disk or network went away)."""

    def __init__(self, run: Any, settings: FaultySettings | None = None) -> None:
        self.left = (settings or FaultySettings()).fail_after

    def log(self, record: Mapping[str, Any]) -> None:
        if self.left <= 0:
            raise RuntimeError("boom: the example sink is gone")
        self.left -= 1

    def close(self) -> None:
        pass
