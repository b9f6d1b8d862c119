"""Assembling a pipeline by name: an environment and an algorithm from the registry, plus the settings, give the
server, the trainer and the workers (``tmrl run``, ``tmrl test``, ``tmrl server|trainer|worker``).

The env spec supplies what depends on observations (spaces, encoder, default memory and compressor, their options,
per-env default settings); the agent spec supplies the training agent and the actor. Neither names the other.

:func:`run_local` is ``tmrl run``: server and trainer in this process, each worker in its own process (started with
``python -m tmrl_core.pipeline``; the settings travel as JSON on its stdin), a live progress display, and an end by
itself at the budget with every child process gone.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces

from tmrl_core.errors import CheckpointError, ConfigError, IncompatibleComponentsError, TmrlError
from tmrl_core.files import atomic_write_text
from tmrl_core.metrics import MetricsLogger
from tmrl_core.paths import run_dir, subdir
from tmrl_core.plugins import get_component
from tmrl_core.preflight import check_pipeline
from tmrl_core.runs import RUN_INFO_FILE, write_status
from tmrl_core.settings import Settings, load_settings
from tmrl_core.specs import AgentSpec, EnvSpec, resolve

log = logging.getLogger("tmrl.pipeline")



# -- resolving components --------------------------------------------------------------------------------------


def env_spec(name: str) -> EnvSpec:
    """The env spec registered as ``name``; ``gym:<id>`` names any registered gymnasium environment."""
    from tmrl_core.envs import GYM_PREFIX, gym_env_spec

    if name.startswith(GYM_PREFIX):
        return gym_env_spec(name)
    return get_component("env", name)


def agent_spec(name: str) -> AgentSpec:
    """The agent spec registered as ``name``."""
    return get_component("agent", name)


@dataclass
class Pipeline:
    """An environment and an algorithm, resolved, with the effective settings.

    Attributes:
        env_name, algo_name: as typed by the user.
        env: the env spec; agent: the agent spec.
        settings: the effective settings (env defaults applied).
        env_settings / agent_settings: their validated sections (None when the component has no settings model).
        observation_space, action_space: the env's spaces (from ``EnvSpec.spaces`` when it has one).
        component_options: keyword arguments for the env's compressor and memory.
    """

    env_name: str
    algo_name: str | None
    env: EnvSpec
    agent: AgentSpec | None
    settings: Any
    env_settings: Any
    agent_settings: Any
    observation_space: Any
    action_space: Any
    component_options: dict[str, Any] = field(default_factory=dict)

    # -- factories ---------------------------------------------------------------------------------------------
    def env_factory(self) -> Callable[[], Any]:
        """Builds the environment: ``env_factory()()``."""
        return partial(self.env.load(), self.env_settings)

    def encoder(self) -> Any:
        return resolve(self.env.encoder, what=f"encoder of env {self.env_name!r}") if self.env.encoder else None

    def actor_factory(self) -> Callable[..., Any]:
        """``f(observation_space=..., action_space=...)`` -> the actor the workers run."""
        if self.agent is None or self.agent.actor is None:
            raise IncompatibleComponentsError(f"algorithm {self.algo_name!r} does not name an actor")
        actor = resolve(self.agent.actor, what=f"actor of agent {self.algo_name!r}")
        return partial(actor, encoder=self.encoder(), settings=self.agent_settings)

    def agent_factory(self) -> Callable[..., Any]:
        """``f(observation_space=..., action_space=..., device=...)`` -> the TrainingAgent."""
        if self.agent is None:
            raise IncompatibleComponentsError("this pipeline has no algorithm")
        return partial(self.agent.load(), encoder=self.encoder(), settings=self.agent_settings)

    def compressor(self) -> Callable[..., Any]:
        """A fresh sample compressor (stateful compressors need one per worker)."""
        name = self.settings.training.compressor or self.env.compressor
        spec = get_component("compressor", name)
        return _call_with_options(
            spec.load(),
            f"compressor {name!r}",
            self.component_options,
            observation_space=self.observation_space,
            action_space=self.action_space,
        )

    def memory_factory(self) -> Callable[..., Any]:
        """``f(nb_steps=..., device=...)`` -> the replay memory."""
        name = self.settings.training.memory or self.env.memory
        spec = get_component("memory", name)
        ts = self.settings.training
        options = dict(self.component_options)
        if ts.prefetch:  # not every memory can prefetch: only asked for when wanted
            options["prefetch"] = True
        return partial(
            _call_with_options,
            spec.load(),
            f"memory {name!r}",
            options,
            observation_space=self.observation_space,
            action_space=self.action_space,
            memory_size=ts.memory_size,
            batch_size=ts.batch_size,
            dataset_path=str(ts.dataset_path) if ts.dataset_path else "",
            crc_debug=self.settings.worker.crc_debug,
            seed=self.settings.run.seed,
        )

    @property
    def steps_per_model(self) -> int:
        """Env steps a worker collects per received model, 0 for no bound: ``worker.max_env_steps_per_model``, or 1
        with ``training.when_behind = "wait"``: workers then wait at the end of every episode for the next weights,
        which that trainer sends only once it has caught up with ``training.max_training_steps_per_env_step``, so
        the update-to-data ratio stays at its target on any hardware."""
        ws, ts = self.settings.worker, self.settings.training
        if ws.max_env_steps_per_model > 0:
            return int(ws.max_env_steps_per_model)
        return 1 if ts.when_behind == "wait" else 0

    @property
    def synchronous(self) -> bool:
        """Workers bound their env steps per received model (:attr:`steps_per_model` > 0)."""
        return self.steps_per_model > 0

    def run_info(self) -> dict[str, Any]:
        """What ``tmrl test`` needs to rebuild the actor of this run."""
        return {
            "env": self.env_name,
            "algo": self.algo_name,
            "sections": {
                section: _dump_section(value)
                for section, value in (
                    (self.env.section, self.env_settings),
                    (self.agent.section if self.agent is not None else "", self.agent_settings),
                )
                if value is not None
            },
        }


def _dump_section(model: Any) -> Any:
    return json.loads(model.model_dump_json()) if hasattr(model, "model_dump_json") else model


def _call_with_options(factory: Callable[..., Any], what: str, options: Mapping[str, Any], **kwargs: Any) -> Any:
    try:
        return factory(**kwargs, **options)
    except TypeError as exc:
        if options and "unexpected keyword" in str(exc):
            raise IncompatibleComponentsError(
                f"{what} does not accept the options {sorted(options)} (from the environment, or training.prefetch):"
                f" {exc}",
                hint="choose a memory/compressor made for this environment (training.memory, training.compressor)",
            ) from exc
        raise


def seed_everything(seed: int | None) -> None:
    """Seed Python's, numpy's and torch's global generators (``run.seed``; None leaves them random)."""
    if seed is None:
        return
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _check_compatible(algo: str, spec: AgentSpec, action_space: Any) -> None:
    kinds = {"box": spaces.Box, "discrete": spaces.Discrete}
    expected = kinds.get(spec.action_space)
    if expected is not None and not isinstance(action_space, expected):
        raise IncompatibleComponentsError(
            f"algorithm {algo!r} needs a {spec.action_space} action space, this environment has {action_space}",
            hint="choose another --algo or --env",
        )


def prepare(
    env: str,
    algo: str | None,
    *,
    settings: Settings | None = None,
    overrides: Mapping[str, Any] | None = None,
    sets: Sequence[str] = (),
    parts: Collection[str] = ("trainer", "worker"),
) -> Pipeline:
    """Resolve ``env`` and ``algo`` and compute the effective settings (``algo=None``: an env-only pipeline, e.g. for
    env tests; it has no actor nor agent).

    Settings that cannot work on this machine for the ``parts`` that will run here (a missing device, a replay
    memory that cannot fit) are refused now, before any process starts (:func:`~tmrl_core.preflight.check_pipeline`).

    Without ``settings``, they are loaded with :func:`~tmrl_core.settings.load_settings` (``overrides`` and ``sets``
    from the command line), the env spec's ``default_settings`` replacing the built-in defaults.
    """
    e_spec = env_spec(env)
    a_spec = agent_spec(algo) if algo is not None else None
    if settings is None:
        settings = load_settings(
            overrides=dict(overrides or {}),
            sets=list(sets),
            defaults=e_spec.default_settings or {},
            defaults_source=f"defaults of env {env!r}",
        )
    env_settings = settings.section(e_spec.section, e_spec.load_settings_model())
    agent_settings = settings.section(a_spec.section, a_spec.load_settings_model()) if a_spec is not None else None
    if e_spec.spaces is not None:
        observation_space, action_space = resolve(e_spec.spaces, what=f"spaces of env {env!r}")(env_settings)
    else:
        probe = e_spec.load()(env_settings)
        try:
            observation_space, action_space = probe.observation_space, probe.action_space
        finally:
            probe.close()
    if a_spec is not None:
        _check_compatible(str(algo), a_spec, action_space)
    options = {}
    if e_spec.component_options is not None:
        options = dict(resolve(e_spec.component_options, what=f"component options of env {env!r}")(env_settings))
    p = Pipeline(
        env, algo, e_spec, a_spec, settings, env_settings, agent_settings, observation_space, action_space, options
    )
    check_pipeline(p, parts=parts)
    return p


# -- building the three parts -----------------------------------------------------------------------------------


def build_server(p: Pipeline, *, transport: Any = None) -> Any:
    """The server, listening."""
    from tmrl_core.server import Server

    return Server(settings=p.settings, transport=transport)


def build_training(p: Pipeline, *, thread_tuner: Any = None) -> Callable[..., Any]:
    """The ``training_cls`` of the pipeline (a partial :class:`~tmrl_core.trainer.TorchTrainingOffline`)."""
    from tmrl_core.trainer import TorchTrainingOffline

    return partial(
        TorchTrainingOffline,
        env_cls=(p.observation_space, p.action_space),
        memory_cls=p.memory_factory(),
        training_agent_cls=p.agent_factory(),
        settings=p.settings,
        thread_tuner=thread_tuner,
    )


def build_trainer(
    p: Pipeline,
    *,
    transport: Any = None,
    on_round: Callable[[dict[str, Any]], None] | None = None,
    metrics: Any = None,
    thread_tuner: Any = None,
) -> Any:
    """The trainer (resumed from the run's checkpoint when there is one), connecting to the server; ``thread_tuner``
    from :func:`tmrl_core.placement.place_trainer`."""
    from tmrl_core.trainer import Trainer

    created = metrics is None
    if metrics is None:
        metrics = MetricsLogger(p.settings.run.name, settings=p.settings, env=p.env_name, algo=p.algo_name or "")
    try:
        return Trainer(
            build_training(p, thread_tuner=thread_tuner),
            settings=p.settings,
            transport=transport,
            metrics=metrics,
            on_round=on_round,
            checkpoint_meta={"env": p.env_name, "algo": p.algo_name},
            close_metrics=created,  # the loggers' close() (wandb's finish) when the run ends
        )
    except BaseException:
        metrics.close()
        raise


def build_worker(
    p: Pipeline,
    *,
    index: int = 0,
    standalone: bool = False,
    expert: bool | None = None,
    transport: Any = None,
    save_weights: bool = True,
    model_path: str | Path | None = None,
) -> Any:
    """A rollout worker of the pipeline (seeded ``run.seed + index`` when the run has a seed)."""
    from tmrl_core.worker import RolloutWorker

    seed = p.settings.run.seed
    return RolloutWorker(
        env_cls=p.env_factory(),
        actor_module_cls=p.actor_factory(),
        sample_compressor=p.compressor(),
        standalone=standalone,
        expert=expert,
        settings=p.settings,
        transport=transport,
        name=f"worker-{index}",
        seed=None if seed is None else seed + 1000 * index,
        save_weights=save_weights,
        model_path=model_path,
        actor_origin=f"the actor of agent {p.algo_name!r} (plugin {p.agent.plugin or '?'!r})" if p.agent else None,
    )


def run_worker(p: Pipeline, worker: Any) -> None:
    """The worker's loop for this pipeline: ``run_synchronous`` when env steps per model are bounded, else ``run``."""
    if p.synchronous and not worker.expert:
        worker.run_synchronous(max_steps_per_update=p.steps_per_model)
    else:
        worker.run()


def write_run_info(p: Pipeline) -> Path:
    path = run_dir(p.settings.run.name) / RUN_INFO_FILE
    text = json.dumps(p.run_info(), indent=2)
    return atomic_write_text(path, text, fsync=False)


def read_run_info(run_name: str) -> dict[str, Any]:
    path = run_dir(run_name, create=False) / RUN_INFO_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"no run named {run_name!r} in this data folder", hint="check --run-name (see the folders in <data>/runs)"
        ) from None
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from None


# -- worker processes -----------------------------------------------------------------------------------------------


def _watch_parent(parent_pid: int) -> None:
    """End this process when its parent is gone (a SIGKILLed `tmrl run` must not leave workers behind)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(0)
            time.sleep(0.5)

    threading.Thread(target=watch, name="tmrl-parent-watch", daemon=True).start()


def _raise_interrupt(signum: int, frame: Any) -> None:
    # once: a second signal must not interrupt the cleanup that the first one started
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def worker_process_main(stdin: Any = None) -> int:
    """Entry point of a worker process: reads ``{"env", "algo", "settings", "index", "parent_pid"}`` as JSON on
    stdin, runs the worker until SIGTERM/SIGINT (or the parent's death)."""
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)
    spec = json.loads((stdin or sys.stdin).read())
    _watch_parent(int(spec["parent_pid"]))
    logging.basicConfig(
        level=spec.get("log_level", "WARNING"), format=f"[worker-{spec['index']}] %(levelname)s %(name)s: %(message)s"
    )
    import torch

    torch.set_num_threads(1)  # a policy's forward pass on one observation gains nothing from more
    worker = None
    try:
        settings = Settings(**spec["settings"])
        p = prepare(spec["env"], spec["algo"], settings=settings, parts=("worker",))
        seed = settings.run.seed
        seed_everything(None if seed is None else seed + 1000 * int(spec["index"]) + 1)
        worker = build_worker(p, index=int(spec["index"]), save_weights=False)
        run_worker(p, worker)
    except KeyboardInterrupt:
        return 0
    except TmrlError as exc:
        print(f"worker-{spec['index']}: error: {exc}", file=sys.stderr)
        return 1
    finally:
        if worker is not None:
            try:
                worker.close()
            except KeyboardInterrupt:
                pass
    return 0


def spawn_worker(p: Pipeline, index: int, *, log_level: str = "WARNING") -> subprocess.Popen[bytes]:
    """Start worker ``index`` of the pipeline in its own process."""
    spec = {
        "env": p.env_name,
        "algo": p.algo_name,
        "settings": p.settings.dump(reveal_secrets=True),
        "index": index,
        "parent_pid": os.getpid(),
        "log_level": log_level,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "tmrl_core.pipeline", "worker"],
        stdin=subprocess.PIPE,
        # its own process group: a terminal's Ctrl-C reaches only us, and we stop the workers in order
        start_new_session=True,
    )
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(spec).encode())
    proc.stdin.close()
    return proc


def stop_processes(procs: Sequence[subprocess.Popen[bytes]], timeout: float = 5.0) -> None:
    """SIGTERM every process, wait up to ``timeout`` s in all, then SIGKILL what is left; reap them all."""
    for proc in procs:
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(max(deadline - time.monotonic(), 0.01))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- tmrl run -------------------------------------------------------------------------------------------------------


#: Niceness added to the training thread when the workers act in real time (see :func:`_yield_to_workers`).
REALTIME_TRAINER_NICENESS = 5


def _yield_to_workers() -> None:
    """Lower the priority of the calling (training) thread, so that on a busy machine a real-time worker's time steps
    win over training steps. Linux applies niceness per thread: the server's relay threads, started earlier, keep
    theirs, and the threads torch starts later for training inherit the lower one. Elsewhere it is the whole process,
    which the worker processes, started before, do not share."""
    if hasattr(os, "nice"):
        try:
            os.nice(REALTIME_TRAINER_NICENESS)
        except OSError as exc:
            log.debug("could not lower the trainer's priority: %s", exc)


@dataclass
class RunResult:
    """What :func:`run_local` returns."""

    history: list[dict[str, Any]]
    interrupted: bool
    workers_failed: int
    resumed: bool


def run_local(
    p: Pipeline,
    *,
    workers: int | None = None,
    on_round: Callable[[dict[str, Any]], None] | None = None,
    on_start: Callable[[Any], None] | None = None,
    worker_log_level: str = "WARNING",
) -> RunResult:
    """``tmrl run``: server and trainer here, ``workers`` worker processes; returns when the budget is spent (or on
    Ctrl-C, after a checkpoint), with every worker process stopped. ``on_start(trainer)`` is called once the trainer
    is built (and resumed, when the run has a checkpoint)."""
    n = workers or p.settings.worker.count
    server = None
    trainer = None
    procs: list[subprocess.Popen[bytes]] = []
    failed: list[int] = []
    try:
        # Workers first: their start (python, torch, the env) overlaps with the trainer's here, so the first env
        # step comes about one torch import after launch instead of two. They wait for the server (and keep their
        # first samples) until it listens; a trainer that cannot start (e.g. a checkpoint that does not fit) stops
        # them in the `finally` below.
        procs = [spawn_worker(p, i, log_level=worker_log_level) for i in range(n)]
        from tmrl_core.placement import place_trainer

        placement = place_trainer(p.settings, local_workers=n, lockstep=p.synchronous, realtime=p.env.realtime)
        seed_everything(p.settings.run.seed)
        trainer = build_trainer(p, on_round=on_round, thread_tuner=placement.tuner())
        if on_start is not None:
            on_start(trainer)
        server = build_server(p)
        write_run_info(p)
        if p.env.realtime:
            _yield_to_workers()

        def monitor() -> None:
            while not trainer.training.stop_event.is_set():
                dead = [proc for proc in procs if proc.poll() is not None]
                for proc in dead:
                    if proc.returncode != 0 and proc.pid not in failed:
                        failed.append(proc.pid)
                        log.error("a worker process ended with exit status %s", proc.returncode)
                if len(dead) == len(procs):
                    log.error("every worker process has ended: stopping")
                    trainer.stop()
                    return
                time.sleep(0.5)

        threading.Thread(target=monitor, name="tmrl-worker-monitor", daemon=True).start()
        history = trainer.run()
        interrupted = trainer.training.stop_event.is_set() and not trainer.training.finished
    except BaseException as exc:
        # a trainer that could not start (e.g. a checkpoint that does not fit) leaves the run's status as it was
        if trainer is not None and not isinstance(exc, KeyboardInterrupt):
            _record_status(p, "failed", f"{type(exc).__name__}: {exc}")
        raise
    finally:
        if trainer is not None:
            trainer.training.stop_event.set()
        stop_processes(procs)
        if server is not None:
            server.stop()
        if trainer is not None:
            trainer.close()
    if failed:
        # the trainer saw a stop; the run failed: its workers did
        _record_status(p, "failed", f"{len(failed)} of {n} worker processes ended with an error")
    return RunResult(history, interrupted, len(failed), trainer.resumed)


def _record_status(p: Pipeline, status: str, error: str | None) -> None:
    try:
        write_status(run_dir(p.settings.run.name), status, error=error)
    except OSError as exc:
        log.warning("could not record the run's status %r: %s", status, exc)


def evaluate_policy(
    p: Pipeline, *, episodes: int = 1, model_path: str | Path | None = None, verbose: bool = False
) -> list[float]:
    """Run the run's saved actor deterministically, standalone; returns the episode returns."""
    path = Path(model_path) if model_path else subdir("weights", create=False) / f"{p.settings.run.name}.safetensors"
    if not path.is_file():
        raise CheckpointError(
            f"no weights for run {p.settings.run.name!r} at {path}",
            hint="train it first (tmrl run), or check --run-name",
        )
    worker = build_worker(p, standalone=True, save_weights=False, model_path=path)
    worker.verbose = verbose
    try:
        return worker.run_episodes(nb_episodes=episodes, train=False)
    finally:
        worker.close()


if __name__ == "__main__":
    if sys.argv[1:] == ["worker"]:
        try:
            code = worker_process_main()
        except KeyboardInterrupt:  # stopped while starting (e.g. importing torch)
            code = 0
        sys.exit(code)
    print("usage: python -m tmrl_core.pipeline worker  (reads its spec as JSON on stdin)", file=sys.stderr)
    sys.exit(2)
