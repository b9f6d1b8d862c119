"""``tmrl run`` (train on this machine) and ``tmrl test`` (run a trained policy).

Heavy imports (torch, gymnasium, the plugins' code) happen inside the command bodies, so ``tmrl --help`` stays fast.
"""

from __future__ import annotations

import json
import logging
import math
import time
from typing import Any, Optional

import typer

from tmrl_core.cli import log_option, logging_overrides, set_option
from tmrl_core.errors import ConfigError, TmrlError
from tmrl_core.paths import run_dir, subdir

OptInt = Optional[int]  # noqa: UP045 - typer needs Optional on python 3.10
OptStr = Optional[str]  # noqa: UP045


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("test")(test)


#: Messages for the run's log file only (the screen shows them its own way).
file_log = logging.getLogger("tmrl.run")
file_log.propagate = False


def _setup_logging(verbose: bool, log_file: Any = None, console: Any = None) -> None:
    """Log to the terminal (warnings, or everything with --verbose) and, for a run, everything to its log file.

    ``console``: the console of the live display, which must print the log lines itself (above the display): a line
    written to the terminal by anyone else is drawn over, and leaves fragments of the display behind.
    """
    from rich.logging import RichHandler

    screen = RichHandler(show_path=False, rich_tracebacks=False, console=console)
    screen.setLevel(logging.INFO if verbose else logging.WARNING)
    handlers: list[logging.Handler] = [screen]
    file_log.handlers.clear()
    if log_file is not None:
        file_handler = logging.StreamHandler(log_file)
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handlers.append(file_handler)
        file_log.addHandler(file_handler)
        file_log.setLevel(logging.INFO)
    logging.basicConfig(
        level=logging.INFO if verbose or log_file is not None else logging.WARNING,
        format="%(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )


class WorkerFailedError(TmrlError):
    """A worker process of ``tmrl run`` ended with an error (its own message and hint are in this one)."""


def run(
    env: str = typer.Option(..., "--env", "-e", help="Environment name (see `tmrl plugins`), or gym:<gymnasium id>."),
    algo: str = typer.Option("sac", "--algo", "-a", help="Training algorithm (see `tmrl plugins`)."),
    workers: OptInt = typer.Option(None, "--workers", "-w", min=1, help="Worker processes (worker.count)."),
    epochs: OptInt = typer.Option(None, "--epochs", min=1, help="Stop after this many epochs (training.epochs)."),
    env_steps: OptInt = typer.Option(
        None, "--env-steps", min=1, help="Stop once this many env steps were collected (training.max_env_steps)."
    ),
    run_name: OptStr = typer.Option(
        None, "--run-name", "-n", help="Run name (default: <env>-<algo>); the same name resumes (run.name)."
    ),
    transport: OptStr = typer.Option(None, "--transport", help="Transport between the parts (server.transport)."),
    log: list[str] = log_option(),
    wandb: bool = typer.Option(False, "--wandb", help="Log metrics to wandb as well (= --log wandb; wandb.enabled)."),
    reset: bool = typer.Option(
        False, "--reset", help="Start afresh: an existing checkpoint of this run is kept aside, not loaded."
    ),
    seed: OptInt = typer.Option(None, "--seed", help="Seed numpy, torch and the environments (run.seed)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what every part does."),
    sets: list[str] = set_option(),
) -> None:
    """Train on this machine: server and trainer in this process, each worker in its own process.

    Ends by itself at the budget (--epochs, --env-steps); Ctrl-C stops after a checkpoint. Running again with the
    same --run-name resumes. Metrics go to <data>/runs/<run>/metrics.jsonl, the log to <data>/runs/<run>/run.log.
    """
    from rich.console import Console

    from tmrl_core.pipeline import prepare, run_local

    _setup_logging(verbose)
    overrides = {
        "run": {"name": run_name, "reset_training": True if reset else None, "seed": seed},
        "worker": {"count": workers},
        "training": {"epochs": epochs, "max_env_steps": env_steps},
        "server": {"transport": transport},
        **logging_overrides(log, wandb),
    }
    p = prepare(env, algo, overrides=overrides, sets=sets, name_after_components=True)
    s = p.settings
    console = Console(stderr=False)
    _warn_refused(console)
    ts = s.training
    if ts.max_env_steps is not None and ts.max_env_steps <= ts.start_training:
        console.print(
            f"[yellow]warning:[/yellow] this run will not train: its budget of {ts.max_env_steps} env steps ends "
            f"before training.start_training={ts.start_training} transitions are in memory (raise --env-steps, or "
            f"lower it with --set training.start_training=N)",
            highlight=False,
        )
    with open(run_dir(s.run.name) / RUN_LOG_FILE, "a", encoding="utf-8", buffering=1) as log_file:
        _setup_logging(verbose, log_file, console)
        file_log.info("tmrl run --env %s --algo %s (run %s)", env, algo, s.run.name)
        try:
            interrupted = _run_and_report(p, console, workers, verbose, log_file, run_local)
        except TmrlError as exc:
            file_log.error("%s", exc)
            raise
        except Exception:
            file_log.exception("internal error")
            raise
    if interrupted:  # Ctrl-C: the summary already says so; the exit status tells the shell
        raise typer.Exit(130)


#: The log of a run, beside its metrics: everything every part logged, and every line its workers printed.
RUN_LOG_FILE = "run.log"


def _run_and_report(p: Any, console: Any, workers: OptInt, verbose: bool, log_file: Any, run_local: Any) -> bool:
    """Run, print and log the summary; raise for failed workers; return whether the run was interrupted."""
    s = p.settings
    display = ProgressDisplay(console, p, workers or s.worker.count)
    t0 = time.monotonic()

    def announce(trainer: Any) -> None:
        t = trainer.training
        if trainer.resumed:
            console.print(
                f"resuming run {s.run.name} at epoch {t.epoch} round {t.round} ({t.env_steps} env steps, "
                f"{len(t.memory)} transitions in memory)",
                highlight=False,
            )

    def show_worker_line(index: int, line: str) -> None:
        log_file.write(f"[worker-{index}] {line}\n")
        console.print(line, markup=False, highlight=False, soft_wrap=True)

    level = "INFO" if verbose else "WARNING"
    with display:
        result = run_local(
            p,
            workers=workers,
            on_round=display.update,
            on_start=announce,
            worker_log_level=level,
            on_worker_output=show_worker_line,
        )
    elapsed = time.monotonic() - t0
    how = "interrupted" if result.interrupted else "failed" if result.failures else "finished"
    resumed = " (resumed)" if result.resumed else ""
    if result.training_steps == 0:
        summary = (
            f"run {s.run.name} {how} after {elapsed:.0f} s without training: {result.env_steps} env steps collected, "
            f"training starts at {s.training.start_training} transitions (training.start_training){resumed}"
        )
        lines = [summary, f"log: {run_dir(s.run.name, create=False) / RUN_LOG_FILE}"]
    else:
        summary = (
            f"run {s.run.name} {how} after {elapsed:.0f} s: {result.env_steps} env steps, {result.training_steps} "
            f"training steps{resumed}"
        )
        lines = [
            summary,
            f"weights: {subdir('weights', create=False) / (s.run.name + '.safetensors')}",
            f"metrics: {run_dir(s.run.name, create=False) / 'metrics.jsonl'}",
            f"log: {run_dir(s.run.name, create=False) / RUN_LOG_FILE}",
        ]
        if not result.failures:
            lines.append(f"test it: tmrl test --run-name {s.run.name}")
    for line in lines:
        console.print(line, highlight=False, markup=False)
    file_log.info("%s", summary)
    for failure in result.failures:
        if failure.traceback:
            log_file.write(f"[worker-{failure.index}] {failure.traceback}\n")
    if result.failures:
        console.file.flush()
        first = result.failures[0]
        others = (
            f" ({len(result.failures) - 1} more worker(s) failed too: see the log)" if len(result.failures) > 1 else ""
        )
        raise WorkerFailedError(f"worker-{first.index} failed: {first.message}{others}", hint=first.hint)
    return bool(result.interrupted)


def _runs_of(env: str, algo: OptStr) -> list[str]:
    """Names of the runs in the data folder that trained ``env`` (with ``algo`` when given), from their run.json."""
    from tmrl_core.pipeline import RUN_INFO_FILE

    names = []
    for path in sorted(subdir("runs", create=False).glob(f"*/{RUN_INFO_FILE}")):
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(info, dict) and info.get("env") == env and (algo is None or info.get("algo") == algo):
            names.append(path.parent.name)
    return names


def _choose_run(env: OptStr, algo: OptStr) -> str:
    """The run ``tmrl test`` means when no --run-name is given: ``<env>-<algo>``, or the only run of ``env``."""
    from tmrl_core.pipeline import default_run_name

    if env is None:
        raise ConfigError("tmrl test needs --run-name (or --env)", hint="the runs are the folders in <data>/runs")
    candidates = _runs_of(env, algo)
    for name in candidates:
        if name == default_run_name(env, algo or "sac"):
            return name
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise ConfigError(
            f"no run of env {env!r}{f' with algo {algo!r}' if algo else ''} in this data folder",
            hint=f"train one first: tmrl run --env {env}",
        )
    raise ConfigError(f"several runs of env {env!r}: {', '.join(candidates)}", hint="choose one with --run-name")


def test(
    run_name: OptStr = typer.Option(None, "--run-name", "-n", help="The run whose weights to load."),
    env: OptStr = typer.Option(
        None,
        "--env",
        "-e",
        help="Environment (default: the run's, from its run.json); without --run-name, the run "
        "<env>-<algo>, or the only run of this env.",
    ),
    episodes: OptInt = typer.Option(None, "--episodes", min=1, help="Episodes to run (training.test_episodes)."),
    algo: OptStr = typer.Option(None, "--algo", "-a", help="Algorithm of the run (default: the one it used)."),
    seed: OptInt = typer.Option(None, "--seed", help="Seed of the first episode."),
    sets: list[str] = set_option(),
) -> None:
    """Run a trained policy deterministically, standalone (no server), and print the episode returns.

    The environment, the algorithm and their settings are the run's (its <data>/runs/<run>/run.json).
    """
    import numpy as np

    from tmrl_core.pipeline import evaluate_policy, prepare, read_run_info
    from tmrl_core.settings import RunSettings

    _setup_logging(False)
    if run_name is None:
        run_name = _choose_run(env, algo)
    else:
        try:
            RunSettings(name=run_name)
        except ValueError as exc:  # pydantic's ValidationError
            message = exc.errors()[0]["msg"]  # type: ignore[attr-defined]  # pydantic's ValidationError
            raise ConfigError(f"bad --run-name {run_name!r}: {message}") from None
    info = read_run_info(run_name)
    if env is not None and info.get("env") != env:
        raise ConfigError(
            f"run {run_name!r} was trained on env {info.get('env')!r}, not {env!r}",
            hint="leave --env out: the run's own env is used",
        )
    # the actor must be built as it was trained: the run's env and agent sections, below the command line
    overrides = dict(info.get("sections", {}))
    overrides["run"] = {"name": run_name, "seed": seed}
    if episodes is not None:
        overrides["training"] = {**overrides.get("training", {}), "test_episodes": episodes}
    p = prepare(info["env"], algo or info["algo"], overrides=overrides, sets=sets, parts=("worker",))

    def show(index: int, ret: float, steps: int, timeouts: int) -> None:
        late = f" ({timeouts} of {steps} time steps timed out)" if timeouts else ""
        typer.echo(f"episode {index}: return {ret:.2f}{late}")

    returns = evaluate_policy(p, episodes=max(1, p.settings.training.test_episodes), on_episode=show)
    typer.echo(f"mean return over {len(returns)} episodes: {float(np.mean(returns)):.2f}")


class ProgressDisplay:
    """Live progress of a run: rounds, env steps, steps/s, returns, losses (a rich live table in a terminal, one
    line per round otherwise)."""

    def __init__(self, console: Any, p: Any, workers: int) -> None:
        self.console = console
        self.p = p
        self.workers = workers
        self.t0 = time.monotonic()
        self.last: dict[str, Any] = {}
        self.known: dict[str, float] = {}
        self.test_returns: list[float] = []  # for the sparkline: the shape of learning at a glance
        self.live: Any = None
        if console.is_terminal:
            from rich.live import Live

            self.live = Live(self._render(), console=console, refresh_per_second=2, transient=False)

    def __enter__(self) -> ProgressDisplay:
        if self.live is not None:
            self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)

    def update(self, record: dict[str, Any]) -> None:
        self.last = record
        ret = record.get("return_test")
        if isinstance(ret, (int, float)) and math.isfinite(ret):
            self.test_returns.append(float(ret))
        for key, value in record.items():
            if isinstance(value, (int, float)) and value is not None and math.isfinite(value):
                self.known[key] = value
        if self.live is not None:
            self.live.update(self._render())
        else:
            self.console.print(self._line(), highlight=False, soft_wrap=True)

    def _budget(self) -> str:
        ts = self.p.settings.training
        parts = [f"{ts.epochs} epochs"]
        if ts.max_env_steps:
            parts.append(f"{ts.max_env_steps} env steps")
        return " or ".join(parts)

    @staticmethod
    def _fmt(value: Any, spec: str = ".1f") -> str:
        return "-" if value is None else format(value, spec)

    def _losses(self) -> list[tuple[str, float]]:
        return [(k, v) for k, v in self.known.items() if k.startswith("loss")]

    def _line(self) -> str:
        r, k = self.last, self.known
        losses = " ".join(f"{name}={value:.3g}" for name, value in self._losses())
        return (
            f"epoch {r.get('epoch', 0)} round {r.get('round', 0)} | env steps {r.get('env_steps', 0)} | training steps "
            f"{r.get('training_steps', 0)} | {self._fmt(r.get('env_steps_per_s'))} env steps/s "
            f"{self._fmt(r.get('training_steps_per_s'))} training steps/s | return train "
            f"{self._fmt(k.get('return_train'))} test {self._fmt(k.get('return_test'))} | {losses}"
        )

    def _render(self) -> Any:
        from rich.table import Table

        from tmrl_core.plot import sparkline

        r, k = self.last, self.known
        s = self.p.settings
        table = Table(title=f"tmrl run {s.run.name}: {self.p.env_name} x {self.p.algo_name}", show_header=False)
        table.add_column(style="bold")
        table.add_column()
        table.add_row("workers", str(self.workers))
        table.add_row("budget", self._budget())
        table.add_row("elapsed", f"{time.monotonic() - self.t0:.0f} s")
        table.add_row("epoch / round", f"{r.get('epoch', 0)} / {r.get('round', 0)} of {s.training.rounds_per_epoch}")
        table.add_row("env steps", f"{r.get('env_steps', 0)} ({self._fmt(r.get('env_steps_per_s'))}/s)")
        table.add_row("training steps", f"{r.get('training_steps', 0)} ({self._fmt(r.get('training_steps_per_s'))}/s)")
        table.add_row("memory", str(r.get("memory_len", 0)))
        table.add_row("return (train)", self._fmt(k.get("return_train")))
        spark = sparkline(self.test_returns, 30)
        table.add_row("return (test)", f"{self._fmt(k.get('return_test'))}  {spark}".rstrip())
        for name, value in self._losses():
            table.add_row(name, f"{value:.4g}")
        if r:
            table.add_row("waiting for samples", f"{self._fmt(r.get('idle_time'), '.2f')} s this round")
        return table


def _warn_refused(console: Any) -> None:
    """Third-party components refused because the core or a first-party plugin owns their name: say so before
    running, since the user may have expected the third party's (``tmrl plugins`` lists them too)."""
    from rich.markup import escape

    from tmrl_core.plugins import get_plugin_manager

    manager = get_plugin_manager()
    manager.collect_all()
    for refused in manager.refused:
        console.print(f"[yellow]warning:[/yellow] {escape(refused.reason)}", highlight=False)

