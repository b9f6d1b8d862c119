"""Assembling a pipeline by name: an environment and an algorithm from the registry, plus the settings, give the
server, the trainer and the workers (``tmrl run``, ``tmrl test``, ``tmrl server|trainer|worker``).

The env spec supplies what depends on observations (spaces, encoder, default memory and compressor, their options,
per-env default settings); the agent spec supplies the training agent and the actor. Neither names the other.

:func:`run_local` is ``tmrl run``: server and trainer in this process, each worker in its own process (started with
``python -m tmrl_core.pipeline``; the settings travel as JSON on its stdin), a live progress display, and an end by
itself at the budget with every child process gone.
"""

from __future__ import annotations

import atexit
import ctypes
import difflib
import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np
from gymnasium import spaces

from tmrl_core.envs import GYM_PREFIX, gym_env_spec
from tmrl_core.errors import CheckpointError, ComponentError, ConfigError, IncompatibleComponentsError, TmrlError
from tmrl_core.files import atomic_write_text
from tmrl_core.metrics import MetricsLogger, read_metrics
from tmrl_core.paths import run_dir, subdir
from tmrl_core.plugins import FIRST_PARTY_PROVIDERS, get_component, get_plugin_manager
from tmrl_core.preflight import check_pipeline
from tmrl_core.runs import RUN_INFO_FILE, write_status
from tmrl_core.settings import CORE_SECTIONS, RUN_NAME_MAX_LENGTH, Settings, load_settings
from tmrl_core.specs import AgentSpec, EnvSpec, resolve

if TYPE_CHECKING:
    from types import FrameType
    from typing import TextIO

    from tmrl_core.worker import RolloutWorker

log = logging.getLogger("tmrl.pipeline")



# -- resolving components --------------------------------------------------------------------------------------


def env_spec(name: str) -> EnvSpec:
    """The env spec registered as ``name``; ``gym:<id>`` names any registered gymnasium environment."""
    if name.startswith(GYM_PREFIX):
        return gym_env_spec(name)
    return get_component("env", name)


def agent_spec(name: str) -> AgentSpec:
    """The agent spec registered as ``name``."""
    return get_component("agent", name)


def _refuse_misspelt_sections(env: str, spec: EnvSpec, sections: set[str]) -> None:
    """An env's default sections that will not apply are dropped, since they may be an uninstalled agent's; one that
    is not an agent's but nearly spells a known section is the plugin's typo, refused here with the plugin named."""
    if not sections:
        return
    manager = get_plugin_manager()
    agents = {s.section for s in manager.registry("agent").all_specs()}
    agents |= {name.replace("-", "_") for kind, name in FIRST_PARTY_PROVIDERS if kind == "agent"}
    known = sorted({*CORE_SECTIONS, *manager.settings_sections(), *agents})
    for section in sorted(sections - agents):
        close = difflib.get_close_matches(section, known, n=1, cutoff=0.8)
        if close:
            raise ConfigError(
                f"env {env!r} from plugin {spec.plugin or '?'} has default settings for an unknown section {section!r}",
                hint=f"did you mean {close[0]}? This is a problem of the plugin {spec.plugin or '?'}: tell its authors",
            )


# -- run names ------------------------------------------------------------------------------------------------------


def default_run_name(env: str, algo: str | None) -> str:
    """The run name used when none is given: the env and the algorithm (``pendulum-sac``, ``gym-Pendulum-v1-sac``),
    so that runs of different envs or algorithms never share a checkpoint by accident."""
    name = "-".join(part for part in (env, algo) if part)
    name = "".join(c if c.isalnum() or c in "._-" else "-" for c in name).lstrip("._-") or "run"
    return name[:RUN_NAME_MAX_LENGTH]


# -- whose fault is it ---------------------------------------------------------------------------------------------


def _modules_of(ref: Any) -> tuple[str, ...]:
    """The module that defines ``ref`` (a ``"module:attr"`` string, a class, a function or a partial of one)."""
    if ref is None:
        return ()
    if isinstance(ref, str):
        return (ref.partition(":")[0],) if ":" in ref else ()
    if isinstance(ref, partial):
        return _modules_of(ref.func)
    module = getattr(ref, "__module__", None)
    return (module,) if isinstance(module, str) else ()


def blame(exc: BaseException, specs: Sequence[Any]) -> TmrlError | None:
    """A :class:`~tmrl_core.errors.ComponentError` naming the component (and its plugin) in whose code ``exc`` was
    raised, or None when it was raised in the core (or is already a user error).

    The innermost frame of the traceback that lies in one of the components' packages decides: an exception inside
    a plugin's env ``step()`` that came from numpy is still the plugin's. A module that defines a spec's factory
    (or actor, encoder, spaces...) points at that spec; any other module of the same package at the first spec of
    that package. The core's own packages are never blamed here: their errors are the core's.
    """
    if isinstance(exc, TmrlError) or not isinstance(exc, Exception):
        return None
    by_module: dict[str, Any] = {}
    by_package: dict[str, Any] = {}
    for spec in specs:
        refs = [getattr(spec, attr, None) for attr in ("factory", "actor", "encoder", "spaces", "component_options")]
        for module in (m for ref in refs for m in _modules_of(ref)):
            package = module.split(".")[0]
            if package == "tmrl_core":
                continue
            by_module.setdefault(module, spec)
            by_package.setdefault(package, spec)
    for frame, _ in reversed(list(traceback.walk_tb(exc.__traceback__))):
        module = str(frame.f_globals.get("__name__", ""))
        spec = by_module.get(module) or by_package.get(module.split(".")[0])
        if spec is not None:
            return ComponentError(spec.kind, spec.name, _distribution_of(spec.plugin), exc)
    return None


def _distribution_of(plugin: str) -> str:
    """The distribution (what ``pip install`` takes) of the plugin registered as ``plugin``."""
    info = get_plugin_manager().infos.get(plugin)
    return info.distribution if info is not None and info.distribution != "(unknown)" else plugin


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

    def component_specs(self) -> list[Any]:
        """The specs of every component this pipeline uses (env, agent, memory, compressor, transport)."""
        specs: list[Any] = [self.env, *([self.agent] if self.agent is not None else [])]
        ts = self.settings.training
        for kind, name in (
            ("memory", ts.memory or self.env.memory),
            ("compressor", ts.compressor or self.env.compressor),
            ("transport", self.settings.server.transport),
        ):
            try:
                specs.append(get_component(kind, name))
            except TmrlError:
                continue
        return specs

    @contextmanager
    def blaming_plugins(self) -> Iterator[None]:
        """Turn an exception raised inside a plugin's component into a :class:`~tmrl_core.errors.ComponentError`
        that names the component and its plugin (exceptions of the core pass unchanged)."""
        try:
            yield
        except Exception as exc:
            error = blame(exc, self.component_specs())
            if error is None:
                raise
            raise error from exc

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


def seed_everything(seed: int | None, *, torch: bool = True) -> None:
    """Seed Python's, numpy's and (unless ``torch=False``) torch's global generators (``run.seed``; None leaves them
    random)."""
    if seed is None:
        return
    random.seed(seed)
    np.random.seed(seed % 2**32)
    if torch:
        _seed_torch(seed)


def _seed_torch(seed: int | None) -> None:
    if seed is None:
        return
    import torch

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
    name_after_components: bool = False,
) -> Pipeline:
    """Resolve ``env`` and ``algo`` and compute the effective settings (``algo=None``: an env-only pipeline, e.g. for
    env tests; it has no actor nor agent).

    Settings that cannot work on this machine for the ``parts`` that will run here (a missing device, a replay
    memory that cannot fit) are refused now, before any process starts (:func:`~tmrl_core.preflight.check_pipeline`).

    Without ``settings``, they are loaded with :func:`~tmrl_core.settings.load_settings` (``overrides`` and ``sets``
    from the command line), the env spec's ``default_settings`` replacing the built-in defaults; with
    ``name_after_components``, ``run.name`` defaults to :func:`default_run_name` (``tmrl run``).
    """
    e_spec = env_spec(env)
    a_spec = agent_spec(algo) if algo is not None else None
    if settings is None:
        # an env may also tune agents for itself ({"sac": {...}}): such a section applies when that agent runs, and
        # is dropped otherwise (the agent may not even be installed)
        own = {*CORE_SECTIONS, e_spec.section, *((a_spec.section,) if a_spec is not None else ())}
        _refuse_misspelt_sections(env, e_spec, set(e_spec.default_settings or {}) - own)
        defaults = {
            section: dict(values)
            for section, values in (e_spec.default_settings or {}).items()
            if section in own
        }
        if name_after_components:
            # `tmrl run` alone: the parts of a distributed run (server, trainer, workers) must agree on one name
            # without knowing each other's env, so they keep run.name's default unless told
            defaults.setdefault("run", {}).setdefault("name", default_run_name(env, algo))
        settings = load_settings(
            overrides=dict(overrides or {}),
            sets=list(sets),
            defaults=defaults,
            defaults_source=f"defaults of env {env!r}",
        )
    if settings.training.random_steps is None:
        # resolved here, so that every worker process (which gets these settings) shares the same figure
        default = e_spec.random_steps if e_spec.random_steps is not None else settings.training.start_training
        settings.training.random_steps = int(default)
    specs = [s for s in (e_spec, a_spec) if s is not None]
    try:
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
    except Exception as exc:
        error = blame(exc, specs)
        if error is None:
            raise
        raise error from exc
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
    before_actor: Callable[[], None] | None = None,
) -> Any:
    """A rollout worker of the pipeline (seeded ``run.seed + index`` when the run has a seed).

    With ``before_actor`` (a worker process's torch set-up), the actor is built in a thread during the warm-up
    (see ``RolloutWorker(actor_in_background=True)``): ``before_actor()`` runs there first, then the actor's plugin
    is imported and the actor built."""
    from tmrl_core.worker import RolloutWorker

    seed = p.settings.run.seed
    actor_factory: Callable[..., Any]
    if before_actor is None:
        actor_factory = p.actor_factory()
    else:

        def actor_factory(**spaces: Any) -> Any:
            before_actor()
            return p.actor_factory()(**spaces)

    return RolloutWorker(
        random_steps=0 if standalone else warm_up_share(p.settings),
        actor_in_background=before_actor is not None,
        env_cls=p.env_factory(),
        actor_module_cls=actor_factory,
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


def warm_up_share(settings: Settings) -> int:
    """One worker's part of the warm-up (``training.random_steps`` shared by ``worker.count`` workers, rounded up)."""
    total = settings.training.random_steps or 0
    return -(-total // max(1, settings.worker.count))


def run_worker(p: Pipeline, worker: RolloutWorker) -> None:
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


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    # once: a second signal must not interrupt the cleanup that the first one started
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


#: A worker process's last line when it fails: this mark, then ``{"message", "hint", "traceback"}`` as JSON.
WORKER_ERROR_MARK = "@tmrl-worker-error "


@dataclass
class WorkerFailure:
    """Why a worker process of :func:`run_local` ended with an error (its own report, or only its exit status)."""

    index: int
    message: str
    hint: str | None = None
    traceback: str = ""
    exit_status: int | None = None


def _report_failure(index: int, exc: BaseException, p: Pipeline | None) -> None:
    """Print the worker's error as its last line, for the parent (see :data:`WORKER_ERROR_MARK`)."""
    error: TmrlError | None = exc if isinstance(exc, TmrlError) else None
    if error is None and p is not None:
        error = blame(exc, p.component_specs())
    if error is not None:
        report = {"message": error.message, "hint": error.hint}
    else:
        report = {
            "message": f"internal error: {type(exc).__name__}: {exc}",
            "hint": "this is a bug in tmrl-core; please report it with the traceback in the run's log file",
        }
    report["traceback"] = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    print(WORKER_ERROR_MARK + json.dumps(report), file=sys.stderr, flush=True)


def exit_without_teardown(status: int) -> NoReturn:
    """End a worker process that closed what it opened: run the ``atexit`` handlers (logging, the actor's build,
    multiprocessing), flush the standard streams, then exit without the interpreter's teardown.

    Why: with torch loaded, the teardown's garbage collection of every module costs seconds of CPU, which a loaded
    machine turns into tens of seconds between Ctrl-C and the exit (measured beside two CPU hogs: 9 to 45 s after
    SIGINT, stack dumps in "Garbage-collecting" after the atexit handlers had run; the tlspyo restart test once waited
    120 s for it in vain). Nothing of the worker's needs it: its endpoint and environment are closed by then.
    """
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed, or a broken pipe: nothing left to say
            pass
    os._exit(status)


def worker_process_main(stdin: TextIO | None = None) -> int:
    """Entry point of a worker process: reads ``{"env", "algo", "settings", "index", "parent_pid"}`` as JSON on
    stdin, runs the worker until SIGTERM/SIGINT (or the parent's death). An error ends it with status 1 after a
    last line that reports it (:data:`WORKER_ERROR_MARK`)."""
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)
    spec = json.loads((stdin or sys.stdin).read())
    _watch_parent(int(spec["parent_pid"]))
    logging.basicConfig(
        level=spec.get("log_level", "WARNING"), format=f"[worker-{spec['index']}] %(levelname)s %(name)s: %(message)s"
    )
    worker = None
    p: Pipeline | None = None
    index = int(spec["index"])
    try:
        settings = Settings(**spec["settings"])
        p = prepare(spec["env"], spec["algo"], settings=settings, parts=("worker",))
        seed = settings.run.seed
        seed = None if seed is None else seed + 1000 * index + 1
        seed_everything(seed, torch=False)

        def torch_set_up() -> None:
            # torch is imported here, in the thread that builds the actor during the warm-up (nothing else in this
            # process uses torch's generator, so seeding it here is as exact as before)
            import torch

            torch.set_num_threads(1)  # a policy's forward pass on one observation gains nothing from more
            _seed_torch(seed)

        worker = build_worker(p, index=index, save_weights=False, before_actor=torch_set_up)
        run_worker(p, worker)
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # noqa: BLE001 - every error becomes the report the parent shows
        _report_failure(index, exc, p)
        return 1
    finally:
        if worker is not None:
            try:
                worker.close()
            except KeyboardInterrupt:
                pass
            except Exception as exc:  # noqa: BLE001 - an actor that failed to build after the loop ended
                _report_failure(index, exc, p)
                return 1
    return 0


def spawn_worker(
    p: Pipeline,
    index: int,
    *,
    log_level: str = "WARNING",
    on_output: Callable[[int, str], None] | None = None,
    failures: dict[int, WorkerFailure] | None = None,
) -> subprocess.Popen[bytes]:
    """Start worker ``index`` of the pipeline in its own process.

    Its output (stdout and stderr, one stream) is read by a thread: each line goes to ``on_output(index, line)``
    (default: this process's stderr); its error report, if it fails, goes into ``failures[index]``.
    """
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
        # the parent shows what its workers print (above its live display, into the run's log file), so that
        # nothing a worker says is drawn over or lost
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        # its own process group: a terminal's Ctrl-C reaches only us, and we stop the workers in order
        start_new_session=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps(spec).encode())
    proc.stdin.close()
    reader = threading.Thread(
        target=_read_worker_output,
        args=(proc, index, on_output or _print_worker_line, failures if failures is not None else {}),
        name=f"tmrl-worker-{index}-output",
        daemon=True,
    )
    reader.start()
    proc.output_reader = reader  # type: ignore[attr-defined]  # joined by run_local once the process has ended
    return proc


def _print_worker_line(index: int, line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _read_worker_output(
    proc: subprocess.Popen[bytes], index: int, on_output: Callable[[int, str], None], failures: dict[int, WorkerFailure]
) -> None:
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if line.startswith(WORKER_ERROR_MARK):
            try:
                report = json.loads(line[len(WORKER_ERROR_MARK) :])
                failures[index] = WorkerFailure(
                    index, str(report["message"]), report.get("hint"), str(report.get("traceback", ""))
                )
                continue
            except (ValueError, KeyError, TypeError):
                pass  # not a report after all: shown as it is
        try:
            on_output(index, line)
        except Exception as exc:  # noqa: BLE001 - a display problem must not stop reading (the worker would block)
            log.debug("could not show a line of worker-%d: %s", index, exc)
    proc.stdout.close()


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
    """What :func:`run_local` returns; ``failures`` says why worker processes ended with an error."""

    history: list[dict[str, Any]]
    interrupted: bool
    workers_failed: int
    resumed: bool
    failures: list[WorkerFailure] = field(default_factory=list)
    training_steps: int = 0
    env_steps: int = 0


def run_local(
    p: Pipeline,
    *,
    workers: int | None = None,
    on_round: Callable[[dict[str, Any]], None] | None = None,
    on_start: Callable[[Any], None] | None = None,
    worker_log_level: str = "WARNING",
    on_worker_output: Callable[[int, str], None] | None = None,
) -> RunResult:
    """``tmrl run``: server and trainer here, ``workers`` worker processes; returns when the budget is spent (or on
    Ctrl-C, after a checkpoint, or when a worker process fails), with every worker process stopped.
    ``on_start(trainer)`` is called once the trainer is built (and resumed, when the run has a checkpoint);
    ``on_worker_output(index, line)`` gets every line the workers print (default: this process's stderr).

    Raises:
        ComponentError: an exception raised in a plugin's component (the agent's ``train()``...) on this side.
    """
    n = workers or p.settings.worker.count
    _shorten_warm_up_on_resume(p)
    server = None
    trainer = None
    procs: list[subprocess.Popen[bytes]] = []
    reports: dict[int, WorkerFailure] = {}
    failed: dict[int, int] = {}  # worker index -> exit status
    try:
        # Workers first: their start (python, torch, the env) overlaps with the trainer's here, so the first env
        # step comes about one torch import after launch instead of two. They wait for the server (and keep their
        # first samples) until it listens; a trainer that cannot start (e.g. a checkpoint that does not fit) stops
        # them in the `finally` below.
        procs = [
            spawn_worker(p, i, log_level=worker_log_level, on_output=on_worker_output, failures=reports)
            for i in range(n)
        ]
        from tmrl_core.placement import place_trainer

        placement = place_trainer(p.settings, local_workers=n, lockstep=p.synchronous, realtime=p.env.realtime)
        seed_everything(p.settings.run.seed)
        with p.blaming_plugins():
            trainer = build_trainer(p, on_round=on_round, thread_tuner=placement.tuner())
        if on_start is not None:
            on_start(trainer)
        server = build_server(p)
        write_run_info(p)
        if p.env.realtime:
            _yield_to_workers()

        def monitor() -> None:
            while not trainer.training.stop_event.is_set():
                for index, proc in enumerate(procs):
                    if proc.poll() is not None and proc.returncode != 0 and index not in failed:
                        failed[index] = proc.returncode
                        # a failed worker stops the run: going on with fewer workers would hide the error until the
                        # end, and the others usually fail for the same reason
                        log.error("worker-%d ended with exit status %s: stopping", index, proc.returncode)
                        trainer.stop()
                        return
                if all(proc.poll() is not None for proc in procs):
                    log.error("every worker process has ended: stopping")
                    trainer.stop()
                    return
                time.sleep(0.2)

        threading.Thread(target=monitor, name="tmrl-worker-monitor", daemon=True).start()
        with p.blaming_plugins():
            history = trainer.run()
        interrupted = trainer.training.stop_event.is_set() and not trainer.training.finished and not failed
    except BaseException as exc:
        # a trainer that could not start (e.g. a checkpoint that does not fit) leaves the run's status as it was
        if trainer is not None and not isinstance(exc, KeyboardInterrupt):
            _record_status(p, "failed", f"{type(exc).__name__}: {exc}")
        raise
    finally:
        if trainer is not None:
            trainer.training.stop_event.set()
        stop_processes(procs)
        for proc in procs:
            reader = getattr(proc, "output_reader", None)
            if reader is not None:
                reader.join(timeout=5.0)  # the process has ended: its last lines (its report) are being read
        if server is not None:
            server.stop()
        if trainer is not None:
            trainer.close()
    for index, proc in enumerate(procs):
        if proc.returncode not in (0, None, -signal.SIGTERM, -signal.SIGKILL) and index not in failed:
            failed[index] = proc.returncode
    failures = []
    for index in sorted(failed):
        report = reports.get(index) or WorkerFailure(
            index,
            f"worker-{index} ended with exit status {failed[index]} without saying why (killed?)",
            "what it printed is in the run's log (<data>/runs/<run>/run.log with tmrl run)",
        )
        report.exit_status = failed[index]
        failures.append(report)
    if failures:
        # the trainer saw a stop; the run failed: its workers did
        _record_status(p, "failed", f"worker-{failures[0].index}: {failures[0].message}")
    t = trainer.training
    return RunResult(
        history,
        interrupted,
        len(failures),
        trainer.resumed,
        failures,
        int(getattr(t, "total_updates", 0)),
        int(getattr(t, "env_steps", 0)),
    )


def _shorten_warm_up_on_resume(p: Pipeline) -> None:
    """A resumed run does only what is left of its warm-up (``training.random_steps``). The workers start before the
    trainer reads its checkpoint, so the env steps done so far come from the run's metrics (its last round)."""
    ts = p.settings.training
    if not ts.random_steps or p.settings.run.reset_training:
        return
    checkpoint = subdir("checkpoints", create=False) / f"{p.settings.run.name}.safetensors"
    if not checkpoint.exists():
        return

    records = read_metrics(p.settings.run.name)
    done = int(records[-1].get("env_steps", 0)) if records else 0
    ts.random_steps = max(0, ts.random_steps - done)


def _record_status(p: Pipeline, status: str, error: str | None) -> None:
    try:
        write_status(run_dir(p.settings.run.name), status, error=error)
    except OSError as exc:
        log.warning("could not record the run's status %r: %s", status, exc)


def evaluate_policy(
    p: Pipeline,
    *,
    episodes: int = 1,
    model_path: str | Path | None = None,
    verbose: bool = False,
    on_episode: Callable[[int, float, int, int], None] | None = None,
) -> list[float]:
    """Run the run's saved actor deterministically, standalone; returns the episode returns.

    ``on_episode(index, return, steps, timed_out_steps)`` is called after each episode (timed-out steps: rtgym's
    time-step timeouts, 0 for other envs)."""
    path = Path(model_path) if model_path else subdir("weights", create=False) / f"{p.settings.run.name}.safetensors"
    if not path.is_file():
        raise CheckpointError(
            f"no weights for run {p.settings.run.name!r} at {path}",
            hint="train it first (tmrl run), or check --run-name",
        )
    with p.blaming_plugins():
        worker = build_worker(p, standalone=True, save_weights=False, model_path=path)
        worker.verbose = verbose
        try:
            returns = []
            for index in range(episodes):
                ret, steps = worker.run_episode(train=False)
                returns.append(ret)
                if on_episode is not None:
                    on_episode(index, ret, steps, worker.last_episode_timeouts)
            return returns
        finally:
            worker.close()


if __name__ == "__main__":
    if sys.argv[1:] == ["worker"]:
        try:
            code = worker_process_main()
        except KeyboardInterrupt:  # stopped while starting (e.g. importing torch)
            code = 0
        exit_without_teardown(code)
    print("usage: python -m tmrl_core.pipeline worker  (reads its spec as JSON on stdin)", file=sys.stderr)
    sys.exit(2)
