"""``tmrl server``, ``tmrl trainer`` and ``tmrl worker``: the three parts of a run, each in its own process, possibly
on different machines, configured by the same settings (``server.host``/``port``/``password``/``tls``, ...).

Start them in any order: a trainer or worker started before the server waits for it, and reconnects if it restarts.
Each ends cleanly on Ctrl-C (the trainer after a checkpoint). Heavy imports happen inside the command bodies.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
from typing import TYPE_CHECKING, Optional

import typer

from tmrl_core.cli import log_option, logging_overrides, set_option, settings_from_cli

if TYPE_CHECKING:
    from types import FrameType

OptInt = Optional[int]  # noqa: UP045 - typer needs Optional on python 3.10
OptStr = Optional[str]  # noqa: UP045


def register(app: typer.Typer) -> None:
    app.command("server")(server)
    app.command("trainer")(trainer)
    app.command("worker")(worker)


def _logging(verbose: bool, role: str) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format=f"[{role}] %(levelname)s %(name)s: %(message)s",
        force=True,
    )


class _Interrupts:
    """Ctrl-C and SIGTERM (process managers and tests send it) end a server or worker like Ctrl-C does, within
    ``grace`` seconds (``run.shutdown_grace``): its closing waits are bounded well below that (delivering what is
    queued, stopping the network process), so one still running then is stuck somewhere; it prints every thread's
    stack to standard error and exits with status 1 rather than hang a process manager. A second signal ends it at
    once (status 130)."""

    def __init__(self) -> None:
        from tmrl_core.settings.models import RunSettings

        self.grace: float = RunSettings.model_fields["shutdown_grace"].default
        self.interrupted = False
        signal.signal(signal.SIGTERM, self._handler)
        signal.signal(signal.SIGINT, self._handler)

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self.interrupted:
            typer.echo("interrupted again: exiting now", err=True)
            os._exit(130)
        self.interrupted = True
        faulthandler.dump_traceback_later(self.grace, exit=True)
        raise KeyboardInterrupt


_TRANSPORT = typer.Option(None, "--transport", help="Transport between the parts (server.transport).")
_HOST = typer.Option(None, "--host", help="Address of the server, for trainer and workers (server.host).")
_PORT = typer.Option(None, "--port", min=1, max=65535, help="Port of the server (server.port).")
_RUN = typer.Option(None, "--run-name", "-n", help="Run name (run.name); the same on every part of a run.")
_VERBOSE = typer.Option(False, "--verbose", "-v", help="Log what this part does.")


def server(
    transport: OptStr = _TRANSPORT,
    port: OptInt = _PORT,
    bind: OptStr = typer.Option(None, "--bind", help="Address to listen on (server.bind)."),
    max_workers: OptInt = typer.Option(None, "--max-workers", min=-1, help="Most workers accepted, -1: any."),
    run_name: OptStr = _RUN,
    verbose: bool = _VERBOSE,
    sets: list[str] = set_option(),
) -> None:
    """Run the server: relays samples from the workers to the trainer and weights to the workers, until Ctrl-C."""
    from tmrl_core.server import Server

    _logging(verbose, "server")
    interrupts = _Interrupts()
    overrides = {
        "run": {"name": run_name},
        "server": {"transport": transport, "port": port, "bind": bind, "max_workers": max_workers},
    }
    settings = settings_from_cli(overrides=overrides, sets=sets)
    interrupts.grace = settings.run.shutdown_grace
    relay = Server(settings=settings)
    typer.echo(f"server ({settings.server.transport}) listening on {relay.address}; Ctrl-C stops it", err=True)
    relay.run()


def trainer(
    env: str = typer.Option(..., "--env", "-e", help="Environment name (see `tmrl plugins`), or gym:<gymnasium id>."),
    algo: str = typer.Option("sac", "--algo", "-a", help="Training algorithm (see `tmrl plugins`)."),
    transport: OptStr = _TRANSPORT,
    host: OptStr = _HOST,
    port: OptInt = _PORT,
    run_name: OptStr = _RUN,
    epochs: OptInt = typer.Option(None, "--epochs", min=1, help="Stop after this many epochs (training.epochs)."),
    env_steps: OptInt = typer.Option(
        None, "--env-steps", min=1, help="Stop once this many env steps were received (training.max_env_steps)."
    ),
    log: list[str] = log_option(),
    wandb: bool = typer.Option(False, "--wandb", help="Log metrics to wandb as well (= --log wandb; wandb.enabled)."),
    reset: bool = typer.Option(False, "--reset", help="Start afresh instead of resuming this run's checkpoint."),
    seed: OptInt = typer.Option(None, "--seed", help="Seed numpy, torch and the environments (run.seed)."),
    verbose: bool = _VERBOSE,
    sets: list[str] = set_option(),
) -> None:
    """Run the trainer: learns from the samples the workers send, sends weights back; checkpoints every epoch.

    Ctrl-C stops after a checkpoint; running again with the same --run-name resumes.
    """
    from tmrl_core.pipeline import build_trainer, prepare, write_run_info

    _logging(verbose, "trainer")
    overrides = {
        "run": {"name": run_name, "reset_training": True if reset else None, "seed": seed},
        "training": {"epochs": epochs, "max_env_steps": env_steps},
        "server": {"transport": transport, "host": host, "port": port},
        **logging_overrides(log, wandb),
    }
    p = prepare(env, algo, overrides=overrides, sets=sets, parts=("trainer",))
    from tmrl_core.placement import place_trainer

    # its workers run on other machines (or as other commands, which the OS schedules): every core trains
    placement = place_trainer(p.settings, local_workers=0, lockstep=p.synchronous, realtime=p.env.realtime)
    part = build_trainer(p, thread_tuner=placement.tuner())
    write_run_info(p)
    typer.echo(
        f"trainer of run {p.settings.run.name} ({env}, {algo}) -> server {p.settings.server.host}:"
        f"{p.settings.server.port} ({p.settings.server.transport}); Ctrl-C stops after a checkpoint",
        err=True,
    )
    # SIGTERM as a first Ctrl-C: Trainer.run turns SIGINT into "stop after a checkpoint"
    signal.signal(signal.SIGTERM, lambda signum, frame: part.stop())
    try:
        history = part.run()
    finally:
        part.close()
    t = part.training
    typer.echo(
        f"trainer stopped after {len(history)} rounds: {t.env_steps} env steps in {t.episodes} episodes "
        f"({t.total_samples} samples received), {t.total_updates} training steps, {len(t.memory)} transitions in "
        "memory",
        err=True,
    )


def worker(
    env: str = typer.Option(..., "--env", "-e", help="Environment name (see `tmrl plugins`), or gym:<gymnasium id>."),
    algo: str = typer.Option("sac", "--algo", "-a", help="Training algorithm (see `tmrl plugins`)."),
    expert: bool = typer.Option(False, "--expert", help="Send samples but never load weights (worker.expert)."),
    index: int = typer.Option(0, "--index", min=0, help="This worker's number: names it and offsets its seed."),
    transport: OptStr = _TRANSPORT,
    host: OptStr = _HOST,
    port: OptInt = _PORT,
    run_name: OptStr = _RUN,
    verbose: bool = _VERBOSE,
    sets: list[str] = set_option(),
) -> None:
    """Run a rollout worker: acts in its environment with the newest weights and sends samples, until Ctrl-C."""
    from tmrl_core.pipeline import build_worker, exit_without_teardown, prepare, run_worker

    _logging(verbose, f"worker-{index}")
    interrupts = _Interrupts()
    overrides = {
        "run": {"name": run_name},
        "worker": {"expert": True if expert else None},
        "server": {"transport": transport, "host": host, "port": port},
    }
    p = prepare(env, algo, overrides=overrides, sets=sets, parts=("worker",))
    interrupts.grace = p.settings.run.shutdown_grace

    def torch_set_up() -> None:  # in the thread that builds the actor during the warm-up (see build_worker)
        import torch

        torch.set_num_threads(1)  # one observation per forward pass: more threads only take cores from a local trainer

    part = build_worker(p, index=index, expert=expert or None, before_actor=torch_set_up)
    typer.echo(
        f"worker-{index} of run {p.settings.run.name} ({env}, {algo}) -> server {p.settings.server.host}:"
        f"{p.settings.server.port} ({p.settings.server.transport}); Ctrl-C stops it",
        err=True,
    )
    try:
        run_worker(p, part)
    except KeyboardInterrupt:
        typer.echo(f"worker-{index}: interrupted", err=True)
    finally:
        part.close()
    exit_without_teardown(0)  # closed: the interpreter's teardown would only delay the exit (see its docstring)
