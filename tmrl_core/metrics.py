"""Per-round training metrics: one JSON object per line in ``<data>/runs/<run>/metrics.jsonl``, and the other
loggers chosen with ``--log`` / ``logging.loggers`` (tensorboard, wandb, a plugin's; see :mod:`tmrl_core.loggers`).

Each record is one round's figures (losses from ``agent.train``, train/test returns and episode lengths reported by
the workers, env steps, training steps, timings) plus ``time`` (Unix seconds). A resumed run appends to the same
file, after dropping the rows logged after the checkpoint it resumes from (:meth:`MetricsLogger.keep_rows`): those
rounds run again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any

from pydantic import SecretStr

from tmrl_core.errors import PluginError, TmrlError
from tmrl_core.loggers import METRICS_FILE, RunInfo, stamp
from tmrl_core.paths import run_dir
from tmrl_core.plugins import CORE_PLUGIN_NAME, get_component
from tmrl_core.settings import CORE_SECTIONS

log = logging.getLogger("tmrl.metrics")

__all__ = [
    "METRICS_FILE",
    "MetricsLogger",
    "read_metrics",
]


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


class MetricsLogger:
    """Gives every round's record to the run's loggers: ``jsonl`` (always) and the chosen ones.

    The loggers are built here, before training starts: an unknown name or a logger that cannot start (e.g. wandb
    without its package or a login) raises a :class:`~tmrl_core.errors.TmrlError`. Later, a logger that raises is
    reported as an error of its plugin and disabled; the others go on (see :mod:`tmrl_core.loggers`).

    Args:
        run_name: names the folder ``<data>/runs/<run>/``.
        settings: the settings (``logging.loggers``, ``wandb.enabled``, and each logger's section).
        loggers: the logger names (default: ``logging.loggers``, plus ``wandb`` when ``wandb.enabled``).
        wandb: log to wandb as well (default ``settings.wandb.enabled``).
        entity, project, run_id, key: override the wandb settings (``run_id`` defaults to the run name, so that a
            resumed run continues the same wandb run).
        config: the run's settings as JSON values (default: ``settings.dump()``).
        env, algo: the run's environment and algorithm, for the loggers that record them.
    """

    def __init__(
        self,
        run_name: str,
        *,
        settings: Any = None,
        loggers: Sequence[str] | None = None,
        wandb: bool | None = None,
        entity: str | None = None,
        project: str | None = None,
        run_id: str | None = None,
        key: str | None = None,
        config: Mapping[str, Any] | None = None,
        env: str = "",
        algo: str = "",
    ) -> None:
        self.run_name = run_name
        self.folder = run_dir(run_name)
        self.path = self.folder / METRICS_FILE
        names = list(loggers) if loggers is not None else list(_setting(settings, "logging", "loggers", []))
        ws = getattr(settings, "wandb", None)
        if wandb if wandb is not None else bool(getattr(ws, "enabled", False)):
            names.append("wandb")
        if config is None:
            config = settings.dump() if settings is not None and hasattr(settings, "dump") else {}
        self.info = RunInfo(run_name, self.folder, env or "", algo or "", dict(config))
        self.names: list[str] = []
        self._loggers: list[tuple[str, str, Any]] = []  # (name, plugin, logger)
        self.failures: list[str] = []
        wandb_overrides = {"entity": entity, "project": project, "run_id": run_id, "key": key}
        try:
            # jsonl last: a sink that cannot start (wandb without a login) leaves no metrics file of a run that never
            # ran
            for name in dict.fromkeys([*(n for n in names if n != "jsonl"), "jsonl"]):
                self._start(name, settings, wandb_overrides if name == "wandb" else {})
        except BaseException:
            self.close()
            raise

    def _start(self, name: str, settings: Any, overrides: dict[str, Any]) -> None:
        spec = get_component("logger", name)
        section = _logger_settings(settings, spec)
        if any(v is not None for v in overrides.values()):
            section = _with_overrides(section, overrides)
        try:
            logger = spec.load()(self.info, section)
        except TmrlError:
            raise
        except Exception as exc:
            raise PluginError(
                f"logger {name!r} from plugin {spec.plugin!r} failed to start: {type(exc).__name__}: {exc}",
                hint=f"fix its settings, leave it out of --log / logging.loggers, or disable the plugin with "
                f"TMRL_DISABLE_PLUGINS={spec.plugin}",
            ) from exc
        self._loggers.append((name, spec.plugin, logger))
        self.names.append(name)

    def _disable(self, index: int, what: str, exc: BaseException) -> None:
        name, plugin, _ = self._loggers.pop(index)
        message = f"error in logger {name!r} from plugin {plugin!r} ({what}): {type(exc).__name__}: {exc}"
        self.failures.append(message)
        log.error("%s; the logger is disabled, the run goes on", message, exc_info=log.isEnabledFor(logging.DEBUG))

    def log(self, record: Mapping[str, Any]) -> None:
        """Give one round's record to every logger (values cleaned, ``time`` added when missing)."""
        clean = stamp(record)
        for index in reversed(range(len(self._loggers))):
            try:
                self._loggers[index][2].log(clean)
            except Exception as exc:  # noqa: BLE001 - a broken sink must not stop training
                self._disable(index, "log", exc)

    def _jsonl(self) -> Any:
        return next((logger for name, _, logger in self._loggers if name == "jsonl"), None)

    @property
    def rows(self) -> int | None:
        """Rows in ``metrics.jsonl`` so far (a checkpoint records it), or None without the jsonl logger."""
        jsonl = self._jsonl()
        return getattr(jsonl, "rows", None)

    def keep_rows(self, n: int) -> None:
        """Drop the rows of ``metrics.jsonl`` after the first ``n`` (see :meth:`JsonlLogger.keep_rows
        <tmrl_core.loggers.JsonlLogger.keep_rows>`); the other loggers are not rewound."""
        jsonl = self._jsonl()
        if jsonl is not None and hasattr(jsonl, "keep_rows"):
            jsonl.keep_rows(n)

    def close(self) -> None:
        """Close every logger; idempotent."""
        while self._loggers:
            try:
                self._loggers[-1][2].close()
            except Exception as exc:  # noqa: BLE001 - the others must be closed too
                self._disable(len(self._loggers) - 1, "close", exc)
            else:
                self._loggers.pop()


def _setting(settings: Any, section: str, key: str, default: Any) -> Any:
    return getattr(getattr(settings, section, None), key, default)


def _logger_settings(settings: Any, spec: Any) -> Any:
    """The logger's settings section: for the core's own loggers, the core section of their name (``wandb``); for
    the others, their model's section, validated now."""
    if settings is None:
        return None
    if spec.plugin == CORE_PLUGIN_NAME and spec.section in CORE_SECTIONS:
        return getattr(settings, spec.section, None)
    return settings.section(spec.section, spec.load_settings_model())


def _with_overrides(section: Any, overrides: dict[str, Any]) -> Any:
    values = dict(section) if section is not None else {}
    for key, value in overrides.items():
        if value is not None:
            values[key] = SecretStr(value) if key == "key" else value
    return SimpleNamespace(**values)
