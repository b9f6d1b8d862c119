"""``tmrl run`` (train on this machine) and ``tmrl test`` (run a trained policy).

Heavy imports (torch, gymnasium, the plugins' code) happen inside the command bodies, so ``tmrl --help`` stays fast.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Optional

import typer

from tmrl_core.cli import log_option, logging_overrides, set_option
from tmrl_core.errors import ConfigError
from tmrl_core.paths import run_dir, subdir

OptInt = Optional[int]  # noqa: UP045 - typer needs Optional on python 3.10
OptStr = Optional[str]  # noqa: UP045


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("test")(test)


def _setup_logging(verbose: bool) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(name)s: %(message)s",
        handlers=[RichHandler(show_path=False, rich_tracebacks=False)],
        force=True,
    )


def run(
    env: str = typer.Option(..., "--env", "-e", help="Environment name (see `tmrl plugins`), or gym:<gymnasium id>."),
    algo: str = typer.Option("sac", "--algo", "-a", help="Training algorithm (see `tmrl plugins`)."),
    workers: OptInt = typer.Option(None, "--workers", "-w", min=1, help="Worker processes (worker.count)."),
    epochs: OptInt = typer.Option(None, "--epochs", min=1, help="Stop after this many epochs (training.epochs)."),
    env_steps: OptInt = typer.Option(
        None, "--env-steps", min=1, help="Stop once this many env steps were collected (training.max_env_steps)."
    ),
    run_name: OptStr = typer.Option(None, "--run-name", "-n", help="Run name; the same name resumes (run.name)."),
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
    same --run-name resumes. Metrics go to <data>/runs/<run>/metrics.jsonl.
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
    p = prepare(env, algo, overrides=overrides, sets=sets)
    console = Console(stderr=False)
    _warn_refused(console)
    display = ProgressDisplay(console, p, workers or p.settings.worker.count)
    t0 = time.monotonic()

    def announce(trainer: Any) -> None:
        t = trainer.training
        if trainer.resumed:
            console.print(
                f"resuming run {p.settings.run.name} at epoch {t.epoch} round {t.round} ({t.env_steps} env steps, "
                f"{len(t.memory)} transitions in memory)",
                highlight=False,
            )

    level = "INFO" if verbose else "WARNING"
    with display:
        result = run_local(p, workers=workers, on_round=display.update, on_start=announce, worker_log_level=level)
    s = p.settings
    last = result.history[-1] if result.history else {}
    console.print(
        f"run [bold]{s.run.name}[/bold] {'interrupted' if result.interrupted else 'finished'} after "
        f"{time.monotonic() - t0:.0f} s: {last.get('env_steps', 0)} env steps, {last.get('training_steps', 0)} "
        f"training steps{' (resumed)' if result.resumed else ''}"
    )
    console.print(f"weights: {subdir('weights', create=False) / (s.run.name + '.safetensors')}")
    console.print(f"metrics: {run_dir(s.run.name, create=False) / 'metrics.jsonl'}")
    console.print(f"test it: tmrl test --env {env} --run-name {s.run.name}")
    if result.workers_failed:
        raise typer.Exit(1)
    if result.interrupted:
        raise typer.Exit(130)


def test(
    env: str = typer.Option(..., "--env", "-e", help="Environment the policy was trained on."),
    run_name: str = typer.Option(..., "--run-name", "-n", help="The run whose weights to load."),
    episodes: OptInt = typer.Option(None, "--episodes", min=1, help="Episodes to run (training.test_episodes)."),
    algo: OptStr = typer.Option(None, "--algo", "-a", help="Algorithm of the run (default: the one it used)."),
    seed: OptInt = typer.Option(None, "--seed", help="Seed of the first episode."),
    sets: list[str] = set_option(),
) -> None:
    """Run a trained policy deterministically, standalone (no server), and print the episode returns."""
    import numpy as np

    from tmrl_core.pipeline import evaluate_policy, prepare, read_run_info

    _setup_logging(False)
    info = read_run_info(run_name)
    if info.get("env") != env:
        raise ConfigError(
            f"run {run_name!r} was trained on env {info.get('env')!r}, not {env!r}", hint=f"use --env {info.get('env')}"
        )
    # the actor must be built as it was trained: the run's env and agent sections, below the command line
    overrides = dict(info.get("sections", {}))
    overrides["run"] = {"name": run_name, "seed": seed}
    if episodes is not None:
        overrides["training"] = {**overrides.get("training", {}), "test_episodes": episodes}
    p = prepare(env, algo or info["algo"], overrides=overrides, sets=sets, parts=("worker",))
    returns = evaluate_policy(p, episodes=max(1, p.settings.training.test_episodes))
    for i, ret in enumerate(returns):
        typer.echo(f"episode {i}: return {ret:.2f}")
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

