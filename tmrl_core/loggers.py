"""Metrics sinks (loggers): the seventh component kind, registered through ``tmrl_register_loggers``.

A logger is built once per run, before training starts, by ``factory(run, settings)``: ``run`` is a
:class:`RunInfo`, ``settings`` the logger's validated settings section (or ``None``). It then receives every round's
record with :meth:`Logger.log` and is closed once with :meth:`Logger.close`. The core registers three:

- ``jsonl``: ``<data>/runs/<run>/metrics.jsonl``, one JSON object per round; always on (``tmrl runs`` and
  ``tmrl plot`` read it).
- ``tensorboard``: event files in ``<data>/runs/<run>/``, so ``tensorboard --logdir <data>/runs`` shows every run;
  scalars under the JSONL keys against env steps, the settings as hyperparameters (``tmrl-core[tensorboard]``).
- ``wandb``: Weights & Biases (``tmrl-core[wandb]``); the wandb run id is the run name, so a resumed run continues it.

A logger whose factory raises stops the run before training starts (the user asked for that sink: better to say so
than to train for hours without it). A logger that raises later, in ``log`` or ``close``, is reported once as an
error of its plugin and disabled; the run and the other loggers go on.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import netrc
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlparse

from tmrl_core.errors import ConfigError, MissingExtraError, PluginError
from tmrl_core.files import atomic_write

log = logging.getLogger("tmrl.metrics")

METRICS_FILE = "metrics.jsonl"

#: what a logger plugin may use (docs/api.md)
__all__ = ["Logger", "RunInfo", "clean_value", "flatten", "numeric"]


@runtime_checkable
class Logger(Protocol):
    """What a logger factory returns."""

    def log(self, record: Mapping[str, Any]) -> None:
        """One round's record: the same keys as a line of ``metrics.jsonl`` (``time`` included); values are numbers,
        booleans, or ``None`` for a figure that was not finite."""

    def close(self) -> None:
        """The run ended (finished, interrupted or failed): flush and release; called once."""


@dataclass(frozen=True)
class RunInfo:
    """What a logger learns about its run, once, when it is built.

    Attributes:
        name: the run name (``run.name``).
        folder: ``<data>/runs/<run>/``, created; loggers that write files put them there.
        env, algo: the environment and algorithm names (empty when the trainer was built without a pipeline).
        config: the run's settings as plain JSON values, secrets hidden.
    """

    name: str
    folder: Path
    env: str = ""
    algo: str = ""
    config: Mapping[str, Any] = field(default_factory=dict)


def clean_value(value: Any) -> Any:
    """A JSON-ready value: tensors and numpy scalars become Python numbers, non-finite floats become ``None``."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def numeric(record: Mapping[str, Any]) -> dict[str, float]:
    """The record's numbers (booleans and ``None`` left out): what scalar sinks plot."""
    return {
        key: float(value)
        for key, value in record.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    }


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"training": {"batch_size": 256}}`` -> ``{"training.batch_size": 256}``; lists and ``None`` as text."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, path + "."))
        elif isinstance(value, (bool, int, float, str)):
            flat[path] = value
        else:
            flat[path] = json.dumps(value)
    return flat


# -- jsonl -----------------------------------------------------------------------------------------------------------


def _complete_rows(path: Path) -> int:
    """Count the complete lines of ``path``, first cutting a last line without its newline (a killed write)."""
    if not path.is_file():
        return 0
    rows = 0
    end_of_last_row = 0
    offset = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            rows += chunk.count(b"\n")
            last = chunk.rfind(b"\n")
            if last >= 0:
                end_of_last_row = offset + last + 1
            offset += len(chunk)
    if end_of_last_row != offset:
        log.warning("metrics: %s ended with a partial row (%d bytes); it was removed", path, offset - end_of_last_row)
        os.truncate(path, end_of_last_row)
    return rows



class JsonlLogger:
    """``<data>/runs/<run>/metrics.jsonl``: one JSON object per round, appended (a resumed run continues the file:
    the trainer first drops the rows logged after its checkpoint with :meth:`keep_rows`)."""

    def __init__(self, run: RunInfo, settings: Any = None) -> None:
        self.path = run.folder / METRICS_FILE
        #: complete rows in the file (a partial last row, left by a kill during a write, is dropped first)
        self.rows = _complete_rows(self.path)
        self._file = open(self.path, "a", encoding="utf-8")  # closed in close()

    def log(self, record: Mapping[str, Any]) -> None:
        self._file.write(json.dumps(dict(record)) + "\n")
        self._file.flush()  # `tmrl runs`, `tmrl plot` and tests read it while the run goes on
        self.rows += 1

    def keep_rows(self, n: int) -> None:
        """Drop the rows after the first ``n`` (a run resumed from a checkpoint written when there were ``n``: the
        rounds after it run again and are logged again)."""
        if self.rows <= n:
            return
        self._file.close()

        def write(tmp: str) -> None:
            with open(self.path, "rb") as src, open(tmp, "wb") as dst:
                for _ in range(n):
                    dst.write(src.readline())

        atomic_write(self.path, write)
        log.info("metrics: dropped %d rows logged after the checkpoint this run resumes from", self.rows - n)
        self.rows = n
        self._file = open(self.path, "a", encoding="utf-8")  # closed in close()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


# -- tensorboard -----------------------------------------------------------------------------------------------------

TENSORBOARD_HINT = "pip install 'tmrl-core[tensorboard]'"


class TensorBoardLogger:
    """TensorBoard event files in the run's folder: every numeric key of the record as a scalar of the same name
    against env steps (but ``time``, which is each scalar's wall time), and the settings as hyperparameters (and as
    text)."""

    def __init__(self, run: RunInfo, settings: Any = None) -> None:
        try:
            import tensorboard  # noqa: F401 - torch.utils.tensorboard needs it, and says so less clearly
            from torch.utils.tensorboard import SummaryWriter
            from torch.utils.tensorboard.summary import hparams
        except ImportError as exc:
            raise MissingExtraError(
                f"the tensorboard logger needs the tensorboard package ({exc})", hint=TENSORBOARD_HINT
            ) from None
        self.writer = SummaryWriter(log_dir=str(run.folder))
        if run.config:
            flat = flatten(run.config)
            flat.update({"env": run.env, "algo": run.algo})
            # the hyperparameter summaries directly in this run's folder (SummaryWriter.add_hparams would open a
            # sub-run per call), naming the return scalars as the metrics to compare runs by
            for summary in hparams(flat, {"return_test": 0.0, "return_train": 0.0}):
                self.writer.file_writer.add_summary(summary)
            self.writer.add_text("settings", "```\n" + json.dumps(dict(run.config), indent=2) + "\n```")

    def log(self, record: Mapping[str, Any]) -> None:
        step = int(record.get("env_steps") or 0)
        walltime = record.get("time")
        for key, value in numeric(record).items():
            if key == "time":
                continue  # each scalar's wall time (a float32 scalar would lose minutes of it)
            self.writer.add_scalar(key, value, global_step=step, walltime=walltime)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


# -- wandb -----------------------------------------------------------------------------------------------------------

WANDB_INSTALL_HINT = "pip install 'tmrl-core[wandb]'"
WANDB_LOGIN_HINT = (
    "run `wandb login` (or set WANDB_API_KEY), or log offline with WANDB_MODE=offline and upload later with "
    "`wandb sync`"
)


def wandb_mode(settings: Any) -> str:
    """``online``, ``offline`` or ``disabled``: the ``wandb.mode`` setting, else ``WANDB_MODE``, else online."""
    mode = getattr(settings, "mode", None) or os.environ.get("WANDB_MODE", "") or "online"
    return {"dryrun": "offline", "run": "online"}.get(mode.strip().lower(), mode.strip().lower())


def wandb_has_credentials(settings: Any) -> bool:
    """An API key is at hand: the ``wandb.key`` setting, ``WANDB_API_KEY``, or a netrc entry for wandb's host (what
    ``wandb login`` writes). Checked by tmrl itself so that a missing login is refused before training starts,
    without a network and without wandb's interactive prompt."""
    key = getattr(settings, "key", None)
    if key is not None or os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname or "api.wandb.ai"
    files = [os.environ["NETRC"]] if os.environ.get("NETRC") else []
    files += [os.path.join(os.path.expanduser("~"), name) for name in (".netrc", "_netrc")]
    for path in files:
        if not os.path.isfile(path):
            continue
        try:
            entry = netrc.netrc(path).authenticators(host)
        except (netrc.NetrcParseError, OSError):
            continue
        if entry is not None and entry[2]:
            return True
    return False


def check_wandb(settings: Any) -> None:
    """Raise a :class:`~tmrl_core.errors.TmrlError` saying what to do when wandb cannot log: not installed, or
    online without a login."""
    try:
        found = importlib.util.find_spec("wandb") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise MissingExtraError(
            "logging to wandb needs the wandb package, which is not installed", hint=WANDB_INSTALL_HINT
        )
    if wandb_mode(settings) == "online" and not wandb_has_credentials(settings):
        raise ConfigError("logging to wandb online needs a wandb login, and none was found", hint=WANDB_LOGIN_HINT)


class WandbLogger:
    """Weights & Biases: the record's numbers at step ``training_steps``; the settings as the run's config."""

    def __init__(self, run: RunInfo, settings: Any = None) -> None:
        check_wandb(settings)
        try:
            import wandb
        except ImportError as exc:
            raise MissingExtraError(
                f"logging to wandb needs the wandb package ({exc})", hint=WANDB_INSTALL_HINT
            ) from None
        secret = settings.key.get_secret_value() if settings is not None and settings.key is not None else None
        if secret and not os.environ.get("WANDB_API_KEY"):
            os.environ["WANDB_API_KEY"] = secret
        try:
            self.run = wandb.init(
                project=getattr(settings, "project", None) or "tmrl",
                entity=getattr(settings, "entity", None),
                id=getattr(settings, "run_id", None) or run.name,  # run_with_wandb(run_id=...)
                name=run.name,
                resume="allow",
                dir=str(run.folder),
                config={**run.config, "env": run.env, "algo": run.algo},
                mode=getattr(settings, "mode", None),
                reinit="finish_previous",
            )
        except Exception as exc:  # wandb's errors (network, auth, usage) have no common base class
            raise PluginError(
                f"wandb could not start a run: {type(exc).__name__}: {exc}", hint=WANDB_LOGIN_HINT
            ) from exc

    def log(self, record: Mapping[str, Any]) -> None:
        self.run.log(numeric(record), step=int(record.get("training_steps") or 0))

    def close(self) -> None:
        self.run.finish()


def stamp(record: Mapping[str, Any]) -> dict[str, Any]:
    """The record as every logger receives it: clean values, and ``time`` (Unix seconds) when it has none."""
    clean = {str(key): clean_value(value) for key, value in record.items()}
    clean.setdefault("time", time.time())
    return clean
