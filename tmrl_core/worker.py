"""The RolloutWorker: runs the current policy in its environment and sends whole episodes to the trainer.

A worker records one sample per environment step (see :mod:`tmrl_core.memory.base` for the conventions): the reset
sample first (its action is what the environment applies right after ``reset()``: rtgym's default action, zeros for
other environments), then ``(act, obs, rew, terminated, truncated, info)`` for every step, each passed through the
sample compressor, into a :class:`~tmrl_core.buffer.Buffer` that holds whole episodes and is sent between episodes.
New weights are picked up between episodes too, so the step loop never waits for the network or for the trainer.

Loops:

- :meth:`RolloutWorker.run`: as fast as the environment allows (real-time environments), a test episode every N
  training episodes.
- :meth:`RolloutWorker.run_synchronous`: for simulators that step faster than training: at most
  ``max_env_steps_per_model`` env steps per received model (checked at episode ends), so that learning per env step
  does not depend on the machine's speed.
- :meth:`RolloutWorker.run_episodes` / :meth:`RolloutWorker.run_episode` / :meth:`RolloutWorker.collect_train_episode`:
  the building blocks, for custom loops.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import sys
import threading
import warnings
import weakref
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tmrl_core.buffer import Buffer
from tmrl_core.compression import CrcRecorder
from tmrl_core.devices import resolve_device
from tmrl_core.envs import carried_action_buffer, is_realtime, reset_action, restore_action_buffer
from tmrl_core.errors import ActionShapeError, CheckpointError
from tmrl_core.paths import subdir
from tmrl_core.settings import Settings, settings_or_load
from tmrl_core.transport.base import Transport
from tmrl_core.transport.factory import make_transport

if TYPE_CHECKING:
    from tmrl_core.agents import ActorModule

# torch (through tmrl_core.agents and tmrl_core.checkpoint) is imported when the actor is built, not with this module:
# a worker process can then take its warm-up's first steps while torch loads (see _ActorBuild)

log = logging.getLogger("tmrl.worker")


#: rtgym's warning when a time step took longer than allowed (the policy or the machine could not keep up).
TIMEOUT_WARNING = "Time-step timed out"
#: Share of an episode's time steps that may time out before the worker warns (once) in plain words.
TIMEOUT_SHARE_WARNING = 0.1


class _TimeoutCounter:
    """Counts rtgym's time-step timeout warnings of this process instead of printing each: on a busy machine there
    are dozens per episode, two lines each, that bury everything else. rtgym issues them from its time-step thread,
    so they are caught where every warning goes (``warnings.showwarning``); any other warning is shown as before."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def install(self) -> None:
        with self._lock:
            if getattr(warnings.showwarning, "_tmrl_timeouts", False):
                return
            previous = warnings.showwarning

            def showwarning(message: Any, category: Any, filename: str, lineno: int, *args: Any, **kw: Any) -> None:
                if str(message).startswith(TIMEOUT_WARNING):
                    with self._lock:
                        self.count += 1
                    return
                previous(message, category, filename, lineno, *args, **kw)

            showwarning._tmrl_timeouts = True  # type: ignore[attr-defined]
            warnings.showwarning = showwarning
            # each message differs (it holds the delay): "always" makes sure none is filtered before it is counted
            warnings.filterwarnings("always", message=TIMEOUT_WARNING)


_timeouts = _TimeoutCounter()


def _is_torch_actor(actor: Any) -> bool:
    # an actor can only be a TorchActorModule once tmrl_core.agents (and torch) is imported: no need to import it
    agents = sys.modules.get("tmrl_core.agents")
    return agents is not None and isinstance(actor, agents.TorchActorModule)


class _ActorBuild:
    """Builds a worker's actor, at once or in a thread.

    In a thread (``background``), the worker's warm-up (uniform random actions, no actor needed) steps the
    environment while the actor's plugin, torch and any weights file load: a worker process's first env step then
    waits for none of them. The thread starts at :meth:`start`, which the worker calls right after its first env step:
    importing torch holds the GIL for long stretches (loading its shared libraries), which would delay that first
    step on a busy machine. :meth:`wait` (the first time the actor is needed) starts the build if it has not started,
    joins it and raises what it raised, with its traceback (so that the error is still blamed on the plugin whose
    code raised it); :attr:`failed` is cheap enough to check at every step, so a failed build stops the warm-up at
    the next step.
    """

    def __init__(self, build: Callable[[], Any], background: bool) -> None:
        self._build: Callable[[], Any] | None = build
        self.actor: Any = None
        self.error: BaseException | None = None
        #: whether :attr:`error` was raised to the caller (close() raises it only if it never was)
        self.raised = False
        self._started = False
        self._thread: threading.Thread | None = None
        if not background:
            self._started = True
            self.actor = build()
            self._build = None

    def start(self) -> None:
        """Start the build in a thread, unless it has started (or was done at once)."""
        if not self._started:
            self._started = True
            self._thread = threading.Thread(target=self._run, name="tmrl-actor-build", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        assert self._build is not None
        try:
            self.actor = self._build()
        except BaseException as exc:  # noqa: BLE001 - raised in the worker's thread by wait()
            self.error = exc
        finally:
            self._build = None  # drop the closure (and what it holds) once done

    @property
    def failed(self) -> bool:
        return self.error is not None

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)
            if not self._thread.is_alive():
                self._thread = None

    def wait(self) -> Any:
        """The actor, once built; raises the build's exception."""
        self.start()
        self.join()
        if self.error is not None:
            self.raised = True
            raise self.error
        return self.actor


class _Stopped(Exception):
    """Unwinds a loop whose worker was stopped (raised between two steps)."""


_live_workers: weakref.WeakSet[RolloutWorker] = weakref.WeakSet()


@atexit.register
def _stop_workers_at_exit() -> None:
    # A worker thread still stepping torch code while the interpreter is torn down can abort the process (the seed
    # tutorial leaves its worker in a daemon thread): stop the loops between two steps and let them return first.
    for worker in list(_live_workers):
        worker.stop(wait=3.0)
        worker._actor_build.join(timeout=30.0)  # an actor still being built (torch mid-import) likewise


class RolloutWorker:
    """Acts in an environment with the current policy; sends samples to the trainer and receives weights.

    Arguments left to ``None`` come from the settings (``settings``, or :func:`~tmrl_core.settings.load_settings`).

    Args:
        env_cls: builds the gymnasium environment, e.g. ``partial(GenericGymEnv, id="Pendulum-v1")``.
        actor_module_cls: builds the policy as ``actor_module_cls(observation_space=..., action_space=...)``.
        sample_compressor: ``f(act, obs, rew, terminated, truncated, info) -> compressed sample`` (None: as is).
        device: inference device (``worker.device``).
        server_ip, server_port, password, security: where the server is (``server.*``; ``security="TLS"`` sets
            ``server.tls``).
        max_samples_per_episode: longer episodes are truncated (``truncated=True``, not terminated).
        model_path: weights file loaded at start if present, and where received weights are saved (default
            ``<data>/weights/<run>.safetensors``).
        obs_preprocessor: applied to every observation the environment returns.
        crc_debug: record every full transition in its sample's ``info`` so the memory can check what it rebuilds.
        model_path_history: prefix of the weights history files (default ``<data>/weights/<run>_``).
        model_history: save every Nth received model to the history (0: never).
        standalone: do not connect to a server (deployment, ``tmrl test``).
        verbose: log weight updates and episode returns.
        expert: send samples but ignore received weights.
        settings: the settings to read defaults from.
        transport: a :class:`~tmrl_core.transport.Transport` (default: the one named by ``server.transport``).
        name: this worker's name in the server's logs.
        seed: seed of the first ``reset`` (then the environment's own RNG continues).
        save_weights: save received weights to ``model_path`` (off when another process owns that file).
        actor_origin: names the actor in error messages, e.g. ``"the actor of agent 'sac' (plugin 'sac')"``
            (default: its class).
        random_steps: warm-up: the first this many collected env steps take uniform random actions from the action
            space instead of the policy's (default: ``training.random_steps``, None counting as 0).
        actor_in_background: with a warm-up, build the actor (and load ``model_path``) in a thread started after
            the first env step, while the warm-up runs; the first use of the actor waits for it, and a failed build
            is raised at the next step. ``tmrl run``'s worker processes do this, so that their first env step does
            not wait for torch. Off by default: the build then draws from torch's global generator at the same time
            as this thread, which only a process that does nothing else with torch meanwhile can keep exact. Never
            for a real-time (rtgym) environment, whose time steps the build would delay.
    """

    def __init__(
        self,
        env_cls: Callable[[], Any],
        actor_module_cls: Callable[..., ActorModule],
        sample_compressor: Callable[..., Any] | None = None,
        device: str | None = None,
        server_ip: str | None = None,
        server_port: int | None = None,
        password: str | None = None,
        security: str | None = None,
        max_samples_per_episode: int | float | None = None,
        model_path: str | Path | None = None,
        obs_preprocessor: Callable[[Any], Any] | None = None,
        crc_debug: bool | None = None,
        model_path_history: str | Path | None = None,
        model_history: int | None = None,
        standalone: bool = False,
        verbose: bool = True,
        expert: bool | None = None,
        *,
        settings: Settings | None = None,
        transport: Transport | None = None,
        name: str | None = None,
        seed: int | None = None,
        save_weights: bool = True,
        actor_origin: str | None = None,
        random_steps: int | None = None,
        actor_in_background: bool = False,
    ) -> None:
        self.settings = settings = settings_or_load(settings)
        ws = settings.worker
        self.run_name = settings.run.name
        self._device_setting = device or ws.device
        self._device: str | None = None  # resolved with the actor: "auto" needs torch
        self.verbose = verbose
        self.expert = ws.expert if expert is None else bool(expert)
        self.standalone = standalone
        self.crc_debug = ws.crc_debug if crc_debug is None else bool(crc_debug)
        limit = ws.max_samples_per_episode if max_samples_per_episode is None else max_samples_per_episode
        self.max_samples_per_episode = int(limit) if np.isfinite(limit) else None
        self.obs_preprocessor = obs_preprocessor
        self.sample_compressor = sample_compressor
        self.model_history = ws.model_history if model_history is None else int(model_history)
        self.save_weights = save_weights
        self.actor_origin = actor_origin
        self._seed = seed if seed is not None else settings.run.seed

        weights_dir = subdir("weights", create=False)
        self.model_path = Path(model_path) if model_path is not None else weights_dir / f"{self.run_name}.safetensors"
        self.model_path_history = (
            str(model_path_history) if model_path_history is not None else str(weights_dir / f"{self.run_name}_")
        )

        self.env = env_cls()
        self.realtime = is_realtime(self.env)
        # rtgym's action buffer as the last recorded episode left it, and whether an unrecorded episode ran since
        # (see carried_action_buffer: recorded episodes must follow each other as if nothing ran in between)
        self._recorded_act_buf: list[np.ndarray] | None = None
        self._unrecorded_since = False
        warm_up = settings.training.random_steps if random_steps is None else random_steps
        self.random_steps_left = int(warm_up or 0)
        if self.random_steps_left and self._seed is not None:
            self.env.action_space.seed(self._seed)
        self._act_shape = getattr(self.env.action_space, "shape", None)
        self._act_dtype = getattr(self.env.action_space, "dtype", None)
        self._actor: Any = None
        self._torch_actor = False
        self._actor_build = _ActorBuild(
            partial(self._build_actor, actor_module_cls, self.env.observation_space, self.env.action_space),
            # not beside a real-time env: the build holds the GIL for long stretches (torch loading its libraries),
            # and the time steps it delays time out (rc-drone, loaded machine: 11-21 of the first episode's 100
            # steps, against 0-2 when the actor is built first)
            background=actor_in_background and self.random_steps_left > 0 and not self.realtime,
        )

        self.buffer = Buffer(maxlen=ws.buffers_maxlen)
        self._crc = None
        if self.crc_debug:
            self._crc = CrcRecorder()
        self.models_received = 0
        self.env_steps = 0
        #: Timed-out time steps (rtgym's warnings) of the last finished episode.
        self.last_episode_timeouts = 0
        self._timeouts_at_start = 0
        self._warned_timeouts = False
        if self.realtime:
            _timeouts.install()
        self._stop = threading.Event()
        self._loop_done = threading.Event()
        self._loop_done.set()
        self._loop_thread: threading.Thread | None = None
        _live_workers.add(self)

        self.endpoint = None
        if not standalone:
            transport = transport or make_transport(
                settings, server_ip=server_ip, server_port=server_port, password=password, security=security
            )
            self.endpoint = transport.worker(name)

    # -- the actor --------------------------------------------------------------------------------------------------
    def _build_actor(
        self, actor_module_cls: Callable[..., ActorModule], observation_space: Any, action_space: Any
    ) -> Any:
        """Build the actor, move it to the device and load ``model_path`` if present (maybe in a thread)."""
        device = resolve_device(self._device_setting)
        actor = actor_module_cls(observation_space=observation_space, action_space=action_space)
        if _is_torch_actor(actor):
            actor = actor.to(device)
        self._device = device
        if self.model_path.is_file():
            self._load_weights(self._read_weights_file(self.model_path), actor)
            log.info("worker: loaded weights from %s", self.model_path)
        return actor

    def _actor_ready(self) -> Any:
        if self._actor is None:
            actor = self._actor_build.wait()
            self._actor, self._torch_actor = actor, _is_torch_actor(actor)
        return self._actor

    @property
    def actor(self) -> Any:
        """The policy (an :class:`~tmrl_core.agents.ActorModule`); waits for it while it is built in a thread."""
        return self._actor_ready()

    @actor.setter
    def actor(self, actor: Any) -> None:
        self._actor_ready()  # a build in progress must not overwrite it later
        self._actor, self._torch_actor = actor, _is_torch_actor(actor)

    @property
    def device(self) -> str:
        """The inference device (``worker.device``, "auto" resolved when the actor is built)."""
        if self._device is None:
            self._actor_ready()
        assert self._device is not None
        return self._device

    # -- weights ---------------------------------------------------------------------------------------------------
    @staticmethod
    def _read_weights_file(path: Path) -> dict[str, Any]:
        from tmrl_core.checkpoint import load_weights

        return load_weights(path)

    def _load_weights(self, weights: Any, actor: Any = None) -> None:
        actor = self.actor if actor is None else actor
        if not _is_torch_actor(actor) and not hasattr(actor, "load_state_dict"):
            raise CheckpointError(f"{type(actor).__name__} cannot load weights (it has no load_state_dict)")
        try:
            actor.load_state_dict(weights)
        except (RuntimeError, KeyError) as exc:
            raise CheckpointError(
                f"the weights do not fit this actor: {exc}",
                hint="were they trained for another environment or algorithm? (check --run-name)",
            ) from exc

    def update_actor_weights(self, verbose: bool = True, blocking: bool = False, timeout: float | None = None) -> bool:
        """Load the newest weights received from the server, if any (``blocking``: wait up to ``timeout`` s).

        Returns True when new weights were loaded. Expert and standalone workers never load weights.
        """
        if self.endpoint is None or self.expert:
            return False
        weights = self.endpoint.receive_weights(blocking=blocking, timeout=timeout)
        if weights is None:
            return False
        try:
            self._load_weights(weights)
        except CheckpointError as exc:  # what arrives must not stop acting: keep the current policy
            log.error("worker: ignored received weights: %s", exc.message)
            return False
        self.models_received += 1
        if self.save_weights:
            self._save(self.model_path, weights)
        if self.model_history and self.models_received % self.model_history == 0:
            self._save(Path(f"{self.model_path_history}{self.models_received}.safetensors"), weights)
        if verbose and self.verbose:
            log.info("worker: new weights (model %d)", self.models_received)
        return True

    @staticmethod
    def _save(path: Path, weights: Any) -> None:
        from tmrl_core.checkpoint import save_weights

        try:
            save_weights(path, weights)
        except OSError as exc:  # a full disk must not stop acting
            log.warning("worker: could not save weights to %s: %s", path, exc)

    # -- acting ----------------------------------------------------------------------------------------------------
    def act(self, obs: Any, test: bool = False) -> np.ndarray:
        """The actor's action for one observation, shaped like the action space."""
        actor = self._actor if self._actor is not None else self._actor_ready()
        if self._torch_actor:
            action = actor.act_(obs, test=test)
        else:
            action = np.asarray(actor.act(obs, test=test))
        if self._act_shape is not None and action.shape != self._act_shape:
            # reshaping would guess (a squeezed action, a flattened one, a wrong one of the right size): refuse
            origin = self.actor_origin or f"actor {type(actor).__module__}.{type(actor).__qualname__}"
            raise ActionShapeError(
                f"{origin} returned an action of shape {action.shape}; the action space {self.env.action_space}"
                f" expects {self._act_shape}",
                hint="act() must return one action shaped like action_space.shape (TorchActorModule.act_ removes a"
                " batch dimension of one); report it to the plugin's authors",
            )
        if self._act_dtype is not None and action.dtype != self._act_dtype:
            action = action.astype(self._act_dtype)
        return action

    def _record(self, act: Any, obs: Any, rew: float, terminated: bool, truncated: bool, info: dict[str, Any]) -> None:
        if self._crc is not None:
            info = self._crc(act, obs, rew, terminated, truncated, info)
        if self.sample_compressor is not None:
            sample = self.sample_compressor(act, obs, rew, terminated, truncated, info)
        else:
            sample = (act, obs, rew, terminated, truncated, info)
        self.buffer.append_sample(sample)

    def reset(self, collect_samples: bool) -> tuple[Any, dict[str, Any]]:
        """Reset the environment; when collecting, record the reset sample."""
        seed, self._seed = self._seed, None
        if collect_samples and self._unrecorded_since and self._recorded_act_buf is not None:
            restore_action_buffer(self.env, self._recorded_act_buf)
            log.debug("worker: restored the action buffer of the last recorded episode (an unrecorded one ran since)")
        self._unrecorded_since = True  # until this episode is recorded to its end
        obs, info = self.env.reset(seed=seed)
        if self.obs_preprocessor is not None:
            obs = self.obs_preprocessor(obs)
        if collect_samples:
            if self._crc is not None:
                self._crc.start_episode()
            # rtgym applies act_buf[-1] right after reset (the default action, or the last one if so configured)
            self._record(reset_action(self.env), obs, 0.0, False, False, dict(info))
        return obs, info

    def step(
        self, obs: Any, test: bool, collect_samples: bool, last_step: bool = False
    ) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """One environment step with the actor's action for ``obs``; ``last_step`` forces truncation."""
        if collect_samples and not test and self.random_steps_left > 0:
            if self._actor_build.failed:
                self._actor_build.wait()  # raises: a worker whose actor cannot be built stops now, not after warm-up
            self.random_steps_left -= 1
            act = np.asarray(self.env.action_space.sample())
        else:
            act = self.act(obs, test=test)
        new_obs, rew, terminated, truncated, info = self.env.step(act)
        if self.obs_preprocessor is not None:
            new_obs = self.obs_preprocessor(new_obs)
        rew, terminated, truncated = float(rew), bool(terminated), bool(truncated)
        if last_step and not terminated:
            truncated = True
        if collect_samples:
            self.env_steps += 1
            if self.env_steps == 1:
                # a fixed line that start-up benchmarks (benchmarks/bench_startup.py) time from the launch
                log.info("worker: first env step")
                self._actor_build.start()  # (when built in a thread) torch loads from now on, see _ActorBuild
            self._record(act, new_obs, rew, terminated, truncated, dict(info))
        return new_obs, rew, terminated, truncated, info

    def _end_of_episode_timeouts(self, steps: int) -> None:
        self.last_episode_timeouts = _timeouts.count - self._timeouts_at_start
        if not self.last_episode_timeouts:
            return
        share = self.last_episode_timeouts / max(steps, 1)
        log.info("worker: %d of %d time steps timed out in this episode", self.last_episode_timeouts, steps)
        if share > TIMEOUT_SHARE_WARNING and not self._warned_timeouts:
            self._warned_timeouts = True
            log.warning(
                "worker: %d of %d time steps (%.0f%%) of an episode timed out: the worker did not act within the "
                "environment's time step, so its observations and actions were late. The machine may be too busy "
                "(training beside it, other programs), or the time step too short for the policy. Each episode's "
                "count is in the metrics (time_step_timeouts_train); this warning is not repeated.",
                self.last_episode_timeouts,
                steps,
                100 * share,
            )

    def _episode(self, max_samples: int | float | None, test: bool, collect: bool) -> tuple[float, int]:
        limit = self.max_samples_per_episode if max_samples is None else max_samples
        limit = None if limit is None or not np.isfinite(limit) else int(limit)
        obs, _ = self.reset(collect_samples=collect)
        self._timeouts_at_start = _timeouts.count  # the pause between episodes is not the policy's
        ret, steps = 0.0, 0
        while True:
            if self._stop.is_set():
                raise _Stopped
            steps += 1
            obs, rew, terminated, truncated, _ = self.step(
                obs, test=test, collect_samples=collect, last_step=limit is not None and steps >= limit
            )
            ret += rew
            if terminated or truncated:
                if collect:
                    self._unrecorded_since = False
                    self._recorded_act_buf = carried_action_buffer(self.env)
                if self.realtime:
                    self._end_of_episode_timeouts(steps)
                return ret, steps

    def episode_metrics(self) -> dict[str, float]:
        """The environment's own metrics of the episode that just ended: its (unwrapped) ``episode_metrics``
        attribute, a name -> number mapping, if it has one (e.g. TrackMania's ``progress`` along the track)."""
        env = getattr(self.env, "unwrapped", self.env)
        metrics = getattr(env, "episode_metrics", None)
        if not metrics:
            return {}
        return {str(name): float(value) for name, value in dict(metrics).items()}

    def collect_train_episode(self, max_samples_per_episode: int | float | None = None) -> tuple[float, int]:
        """Run one training episode into the buffer (not sent); returns ``(return, steps)``."""
        ret, steps = self._episode(max_samples_per_episode, test=False, collect=True)
        self.buffer.stat_train_return = ret
        self.buffer.stat_train_steps = steps
        self.buffer.stat_train_timeouts = self.last_episode_timeouts if self.realtime else None
        self.buffer.stat_train_metrics = self.episode_metrics()
        if self.verbose:
            log.debug("worker: train episode return %.2f in %d steps", ret, steps)
        return ret, steps

    def run_episode(self, max_samples_per_episode: int | float | None = None, train: bool = False) -> tuple[float, int]:
        """Run one episode; ``train=False`` acts deterministically and records nothing but its statistics."""
        if train:
            return self.collect_train_episode(max_samples_per_episode)
        ret, steps = self._episode(max_samples_per_episode, test=True, collect=False)
        self.buffer.stat_test_return = ret
        self.buffer.stat_test_steps = steps
        self.buffer.stat_test_metrics = self.episode_metrics()
        if self.verbose:
            log.info("worker: test episode return %.2f in %d steps", ret, steps)
        return ret, steps

    def run_episodes(
        self, max_samples_per_episode: int | float | None = None, nb_episodes: int = 1, train: bool = False
    ) -> list[float]:
        """Run ``nb_episodes`` episodes (sending each training one); returns their returns."""
        returns = []
        for _ in range(nb_episodes):
            if self._stop.is_set():
                break
            returns.append(self.run_episode(max_samples_per_episode, train=train)[0])
            if train:
                self.send_and_clear_buffer()
        return returns

    def send_and_clear_buffer(self) -> None:
        """Send the buffer (whole episodes) to the trainer and start a new one; keeps test statistics for later when
        there is no sample to carry them."""
        if len(self.buffer) == 0:
            return
        if self.endpoint is not None:
            self.endpoint.send_samples(self.buffer)
        self.buffer = Buffer(maxlen=self.buffer.maxlen)

    # -- loops ------------------------------------------------------------------------------------------------------
    def run(
        self,
        test_episode_interval: int | None = None,
        nb_episodes: int | float = np.inf,
        verbose: bool = True,
        expert: bool | None = None,
    ) -> None:
        """Collect training episodes as fast as the environment allows, with a test episode every
        ``test_episode_interval`` training episodes (0: none); new weights are loaded between episodes."""
        ws = self.settings.worker
        interval = ws.test_episode_interval if test_episode_interval is None else test_episode_interval
        expert = self.expert if expert is None else expert
        episode = 0
        with self._loop():
            while episode < nb_episodes and not self._stop.is_set():
                if interval and episode and episode % interval == 0 and not expert:
                    self.run_episode(train=False)
                self.collect_train_episode()
                self.send_and_clear_buffer()
                if not expert:
                    self.update_actor_weights(verbose=verbose, blocking=False)
                episode += 1

    def run_synchronous(
        self,
        test_episode_interval: int | None = None,
        nb_steps: int | float = np.inf,
        initial_steps: int | None = None,
        max_steps_per_update: int | None = None,
        verbose: bool = False,
    ) -> None:
        """Collect episodes, but at most ``max_steps_per_update`` env steps per received model (checked at the end
        of each episode, since buffers hold whole episodes), after ``initial_steps`` free steps (default: the
        trainer's ``training.start_training``). For non-real-time environments that step faster than training."""
        ws = self.settings.worker
        interval = ws.test_episode_interval if test_episode_interval is None else test_episode_interval
        bound = ws.max_env_steps_per_model if max_steps_per_update is None else max_steps_per_update
        initial = self.settings.training.start_training if initial_steps is None else initial_steps
        steps_total, since_model, episode = 0, 0, 0
        with self._loop():
            while steps_total < nb_steps and not self._stop.is_set():
                if interval and episode and episode % interval == 0 and not self.expert:
                    self.run_episode(train=False)
                _, steps = self.collect_train_episode()
                self.send_and_clear_buffer()
                steps_total += steps
                since_model += steps
                episode += 1
                if self.expert:
                    continue
                must_wait = bool(bound) and steps_total >= initial and since_model >= bound
                while not self._stop.is_set():
                    if self.update_actor_weights(verbose=verbose, blocking=must_wait, timeout=0.5):
                        since_model = 0
                        break
                    if not must_wait:
                        break

    @contextlib.contextmanager
    def _loop(self) -> Iterator[None]:
        """Marks a running loop: :meth:`stop` can wait for it; a stop between two steps ends it quietly."""
        self._loop_thread = threading.current_thread()
        self._loop_done.clear()
        try:
            yield
        except _Stopped:
            self.buffer = Buffer(maxlen=self.buffer.maxlen)  # a partial episode is never sent
        finally:
            self._loop_done.set()

    def stop(self, wait: float | None = None) -> None:
        """Ask the running loop to return before its next step, dropping the unfinished episode (thread-safe);
        ``wait``: seconds to wait for it to return (not when called from the loop's own thread)."""
        self._stop.set()
        if wait and self._loop_thread is not threading.current_thread():
            self._loop_done.wait(wait)

    def close(self) -> None:
        """Disconnect and close the environment; raises the actor build's exception if it was never raised (the
        loop ended before it needed the actor)."""
        self._stop.set()
        if self.endpoint is not None:
            self.endpoint.close()
            self.endpoint = None
        try:
            self.env.close()
        except Exception as exc:  # noqa: BLE001 - closing must not hide the reason we are closing
            log.debug("worker: env.close() failed: %s", exc)
        # a build still running would be torn down with the interpreter (torch mid-import can abort the process)
        self._actor_build.join()
        if self._actor_build.failed and not self._actor_build.raised:
            self._actor_build.wait()
