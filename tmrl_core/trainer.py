"""The Trainer: receives sample buffers, keeps the replay memory, trains the agent, sends weights back.

- :class:`TorchTrainingOffline` is the training loop itself (epochs of rounds of training steps) and owns the memory
  and the agent; it needs only the observation and action spaces, never a live environment.
- :class:`Trainer` connects it to the server, checkpoints it at the end of every epoch and on Ctrl-C, resumes it
  from the run's checkpoint, writes the actor's weights file and logs metrics every round.

Pacing (why learning does not depend on the machine's speed): training pauses whenever it is more than
``max_training_steps_per_env_step`` steps per received env step ahead; when it pauses, and every
``update_model_interval`` steps, it sends the actor's weights, which is what workers in ``run_synchronous`` wait for.
"""

from __future__ import annotations

import cProfile
import inspect
import io
import logging
import math
import pstats
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, NonNegativeInt, ValidationError

from tmrl_core import checkpoint as ckpt
from tmrl_core.buffer import Buffer
from tmrl_core.devices import resolve_device
from tmrl_core.errors import CheckpointError, DamagedStateError, TmrlError
from tmrl_core.files import remove_stale_temporaries
from tmrl_core.metrics import MetricsLogger
from tmrl_core.paths import run_dir, subdir
from tmrl_core.runs import write_status
from tmrl_core.settings import Settings, settings_or_load
from tmrl_core.transport.base import Transport
from tmrl_core.transport.factory import make_transport

if TYPE_CHECKING:
    from types import FrameType

    from tmrl_core.agents import TorchActorModule
    from tmrl_core.transport.base import TrainerEndpoint

log = logging.getLogger("tmrl.trainer")

#: workers named in the ``samples_dropped/<worker>`` metrics; beyond, their drops are counted under OTHER_WORKERS
MAX_WORKERS_IN_METRICS = 64
OTHER_WORKERS = "other-workers"
#: the name for buffers that do not say which worker sent them
UNNAMED_WORKER = "unnamed"

_DEFAULT: Any = object()  # "not given": tell apart from an explicit None (which disables a file)


def _accepts(factory: Any, name: str) -> bool:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def count_env_steps(buffer: Buffer) -> tuple[int, int]:
    """``(env steps, episodes)`` in a buffer of whole episodes: every episode has one reset sample, which is not a
    step. Works on compressed samples that keep the ``(act, obs, rew, terminated, truncated, info)`` layout."""
    episodes = 0
    try:
        for sample in buffer.memory:
            if sample[3] or sample[4]:
                episodes += 1
    except (TypeError, IndexError):
        return len(buffer), 0
    return max(len(buffer) - episodes, 0), episodes


# -- the training loop ---------------------------------------------------------------------------------------------


class _Interface:
    """What :meth:`TorchTrainingOffline.run_epoch` talks to: the trainer's endpoint (or nothing, offline)."""

    def __init__(self, endpoint: TrainerEndpoint | None = None) -> None:
        self.endpoint = endpoint

    def broadcast_model(self, actor: TorchActorModule) -> None:
        if self.endpoint is not None:
            self.endpoint.send_weights(actor.state_dict())

    def retrieve_buffers(self) -> list[Buffer]:
        return self.endpoint.receive_samples() if self.endpoint is not None else []


@dataclass
class TorchTrainingOffline:
    """Off-policy training: epochs of ``rounds`` rounds of ``steps`` training steps. Fields left to None come from
    the ``training`` settings.

    Args:
        env_cls: ``(observation_space, action_space)``, or a callable building an env to read them from (it is
            never reset).
        memory_cls: builds the replay memory as ``memory_cls(nb_steps=..., device=...)``.
        training_agent_cls: builds the agent as ``training_agent_cls(observation_space=..., action_space=...,
            device=...)``.
        epochs, rounds, steps: a checkpoint ends every epoch; metrics every round; training steps per round.
        update_model_interval: send the actor's weights every this many training steps.
        update_buffer_interval: collect received buffers every this many training steps.
        max_training_steps_per_env_step: pause training when further ahead of the received env steps.
        sleep_between_buffer_retrieval_attempts: seconds between checks while waiting for samples.
        profiling: profile each epoch with cProfile and log the top functions.
        agent_scheduler: ``f(agent, epoch)`` called at the start of every epoch.
        start_training: transitions in memory before training starts.
        device: training device (None or ``"auto"``: CUDA when available).
        max_env_steps: stop once this many env steps were received (None: only ``epochs`` ends training).
        settings: where the defaults come from (default: :func:`~tmrl_core.settings.load_settings`).
        thread_tuner: a :class:`~tmrl_core.placement.ThreadTuner` told the duration of every update (``tmrl run``
            and ``tmrl trainer`` give one); None leaves torch's threads alone.
        when_behind: ``"continue"``, or ``"wait"``: weights are sent only once training has caught up with
            ``max_training_steps_per_env_step`` (workers waiting for them then keep the ratio at its target).
    """

    env_cls: Any = None
    memory_cls: Callable[..., Any] | None = None
    training_agent_cls: Callable[..., Any] | None = None
    epochs: int | None = None
    rounds: int | None = None
    steps: int | None = None
    update_model_interval: int | None = None
    update_buffer_interval: int | None = None
    max_training_steps_per_env_step: float | None = None
    sleep_between_buffer_retrieval_attempts: float = 0.05
    profiling: bool = False
    agent_scheduler: Callable[[Any, int], None] | None = None
    start_training: int | None = None
    device: str | None = None
    max_env_steps: int | None = None
    settings: Settings | None = field(default=None, repr=False)
    thread_tuner: Any = field(default=None, repr=False)
    when_behind: str | None = None

    def __post_init__(self) -> None:
        ts = settings_or_load(self.settings).training
        for name, key in (
            ("epochs", "epochs"),
            ("rounds", "rounds_per_epoch"),
            ("steps", "steps_per_round"),
            ("update_model_interval", "update_model_interval"),
            ("update_buffer_interval", "update_buffer_interval"),
            ("max_training_steps_per_env_step", "max_training_steps_per_env_step"),
            ("start_training", "start_training"),
            ("max_env_steps", "max_env_steps"),
            ("when_behind", "when_behind"),
        ):
            if getattr(self, name) is None:
                setattr(self, name, getattr(ts, key))
        self.device = resolve_device(self.device if self.device is not None else ts.device)
        if self.memory_cls is None or self.training_agent_cls is None:
            raise TmrlError("TorchTrainingOffline needs memory_cls and training_agent_cls")
        self.observation_space, self.action_space = self._spaces(self.env_cls)
        self.memory = self.memory_cls(nb_steps=self.steps, device=self.device)
        self.agent = self.training_agent_cls(
            observation_space=self.observation_space, action_space=self.action_space, device=self.device
        )
        self.epoch = 0
        self.round = 0
        self.total_updates = 0
        self.total_samples = 0
        self.env_steps = 0
        self.episodes = 0
        self.finished = False
        self.stop_event = threading.Event()
        self._updates_at_last_send = -1
        self._round_episodes: dict[str, list[float]] = defaultdict(list)
        self._round_dropped = 0  # samples the workers had to drop (buffer overflow, no server), reported this round
        self._round_dropped_at: dict[tuple[str, str], int] = defaultdict(int)  # the same by (worker, where)
        self._dropping_workers: set[str] = set()  # workers that reported drops in this run (bounded)

    @staticmethod
    def _spaces(env_cls: Any) -> tuple[Any, Any]:
        if isinstance(env_cls, (tuple, list)) and len(env_cls) == 2:
            return env_cls[0], env_cls[1]
        if env_cls is None:
            raise TmrlError("TorchTrainingOffline needs env_cls: (observation_space, action_space) or an env factory")
        env = env_cls()
        try:
            return env.observation_space, env.action_space
        finally:
            try:
                env.close()
            except Exception as exc:  # noqa: BLE001 - the spaces are all we needed
                log.debug("closing the spaces-only env failed: %s", exc)

    # -- samples -----------------------------------------------------------------------------------------------
    def ingest(self, interface: _Interface) -> int:
        """Append every received buffer to the memory; returns the number of env steps received."""
        received = 0
        for buffer in interface.retrieve_buffers():
            if self.budget_reached:
                # Buffers hold whole episodes: the budget is overshot by less than the episode that crossed it, and
                # what arrives after that is beyond the budget (workers are stopped once the trainer returns).
                continue
            steps, episodes = count_env_steps(buffer)
            self.memory.append(buffer)
            self.total_samples += len(buffer)
            self.env_steps += steps
            self.episodes += episodes
            if buffer.dropped:
                self._count_dropped(buffer)
            received += steps
            for key, value in (
                ("return_train", buffer.stat_train_return),
                ("return_test", buffer.stat_test_return),
                ("episode_length_train", buffer.stat_train_steps),
                ("episode_length_test", buffer.stat_test_steps),
                ("time_step_timeouts_train", buffer.stat_train_timeouts),
            ):
                if value is not None:
                    self._round_episodes[key].append(float(value))
            if buffer.stat_train_timeouts is not None and buffer.stat_train_steps:
                share = buffer.stat_train_timeouts / buffer.stat_train_steps
                self._round_episodes["time_step_timeout_share_train"].append(share)
            for suffix, metrics in (("train", buffer.stat_train_metrics), ("test", buffer.stat_test_metrics)):
                for name, value in metrics.items():
                    self._round_episodes[f"{name}_{suffix}"].append(float(value))
        return received

    def _count_dropped(self, buffer: Buffer) -> None:
        """Add what ``buffer`` reports dropped to this round's counts, per worker and per place."""
        # getattr: a third-party transport's buffers may come from code older than these attributes
        worker = getattr(buffer, "worker", None) or UNNAMED_WORKER
        if worker not in self._dropping_workers and len(self._dropping_workers) >= MAX_WORKERS_IN_METRICS:
            worker = OTHER_WORKERS
        self._dropping_workers.add(worker)
        places = dict(getattr(buffer, "dropped_at", {}))
        unplaced = buffer.dropped - sum(places.values())
        if unplaced > 0:
            places["unspecified"] = unplaced
        for where, samples in places.items():
            self._round_dropped_at[(worker, where)] += samples
        self._round_dropped += buffer.dropped

    @property
    def budget_reached(self) -> bool:
        return self.max_env_steps is not None and self.env_steps >= self.max_env_steps

    def _ahead(self) -> bool:
        return self.total_updates >= self.max_training_steps_per_env_step * self.env_steps

    def _send(self, interface: _Interface) -> None:
        interface.broadcast_model(self.agent.get_actor())
        self._updates_at_last_send = self.total_updates

    def _wait_for_samples(self, interface: _Interface, until: Callable[[], bool]) -> float:
        """Sleep-and-collect until ``until()`` (or stop / budget); returns the seconds spent. Sends the weights once
        if they changed since the last send, so that synchronous workers waiting for a model can go on."""
        t0 = time.perf_counter()
        while not until() and not self.stop_event.is_set():
            if self._updates_at_last_send != self.total_updates:
                self._send(interface)
            if self.budget_reached:
                break
            if self.stop_event.wait(self.sleep_between_buffer_retrieval_attempts):
                break
            if self.ingest(interface) and self.total_updates == 0:
                self._send(interface)  # not training yet: keep synchronous workers going until start_training
        return time.perf_counter() - t0

    # -- epochs and rounds ----------------------------------------------------------------------------------------
    def run_epoch(
        self, interface: _Interface | None = None, on_round: Callable[[dict[str, Any]], None] | None = None
    ) -> list[dict[str, Any]]:
        """Run the rest of the current epoch (all its rounds, or until stop / budget); returns per-round metrics,
        also given to ``on_round`` as soon as each round ends."""
        interface = interface if interface is not None else _Interface()
        if self.agent_scheduler is not None and self.round == 0:
            self.agent_scheduler(self.agent, self.epoch)
        profiler = cProfile.Profile() if self.profiling else None
        if profiler is not None:
            profiler.enable()
        stats = []
        while self.round < self.rounds and not self.finished and not self.stop_event.is_set():
            stats.append(self.run_round(interface))
            if on_round is not None:
                on_round(stats[-1])
        if self.round >= self.rounds:
            self.epoch += 1
            self.round = 0
        if profiler is not None:
            profiler.disable()
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(25)
            log.info("epoch profile:\n%s", out.getvalue())
        return stats

    def run_round(self, interface: _Interface) -> dict[str, Any]:
        """One round of ``steps`` training steps; returns its metrics."""
        t_start = time.perf_counter()
        round_index = self.round
        updates_before, steps_before = self.total_updates, self.env_steps
        self.ingest(interface)
        needed = max(int(self.start_training), 1)
        idle = self._wait_for_samples(interface, lambda: len(self.memory) >= needed)
        losses: dict[str, list[float]] = defaultdict(list)
        sampling = training = 0.0
        done_steps = 0
        updates_per_step = max(1, int(getattr(self.agent, "updates_per_step", 1)))
        # A budget that is not above start_training never trains (tmrl run says so up front). Otherwise the round in
        # which the budget is reached still trains: workers may deliver the whole budget at once (a fast env, or
        # samples queued while the trainer started), and such a run must train on them.
        can_train = self.max_env_steps is None or self.max_env_steps > self.start_training
        if len(self.memory) >= needed and not self.stop_event.is_set() and can_train:
            batches = iter(self.memory)
            # Reaching the env-step budget mid-round ends the run at the end of this round: its remaining training
            # steps are still done, within max_training_steps_per_env_step of what was received.
            while done_steps < self.steps and not self.stop_event.is_set():
                if self._ahead():
                    idle += self._wait_for_samples(interface, lambda: not self._ahead())
                    if self._ahead():  # stopped, or the env-step budget is spent
                        break
                # One training step is `updates_per_step` agent updates (REDQ's G critic updates and one actor
                # update), so intervals and the steps-per-env-step ratio mean the same for every agent.
                for _ in range(updates_per_step):
                    t0 = time.perf_counter()
                    batch = next(batches, None)
                    if batch is None:
                        batches = iter(self.memory)
                        batch = next(batches)
                    t1 = time.perf_counter()
                    metrics = self.agent.train(batch)
                    t2 = time.perf_counter()
                    if self.thread_tuner is not None:
                        self.thread_tuner.record(t2 - t1)
                    sampling += t1 - t0
                    training += t2 - t1
                    for key, value in (metrics or {}).items():
                        losses[key].append(float(value))
                self.total_updates += 1
                done_steps += 1
                # "wait": a send before catching up would let waiting workers collect ahead of the target ratio
                if self.total_updates % self.update_model_interval == 0 and self.when_behind != "wait":
                    self._send(interface)
                if self.total_updates % self.update_buffer_interval == 0:
                    self.ingest(interface)
        if self.budget_reached:
            self.finished = True
        if done_steps >= self.steps:
            self.round += 1
        elapsed = time.perf_counter() - t_start
        record: dict[str, Any] = {
            "epoch": self.epoch,
            "round": round_index,
            "complete": done_steps >= self.steps,
            "training_steps": self.total_updates,
            "env_steps": self.env_steps,
            "episodes": self.episodes,
            "memory_len": len(self.memory),
            "round_time": elapsed,
            "idle_time": idle,
            "sampling_time": sampling,
            "training_time": training,
            "training_steps_per_s": (self.total_updates - updates_before) / elapsed if elapsed > 0 else 0.0,
            "env_steps_per_s": (self.env_steps - steps_before) / elapsed if elapsed > 0 else 0.0,
            # the update-to-data ratio actually reached: below max_training_steps_per_env_step when the trainer
            # cannot keep up with workers that do not wait for it (real-time envs, training.when_behind=continue)
            "update_to_data": self.total_updates / self.env_steps if self.env_steps else 0.0,
            "update_to_data_target": float(self.max_training_steps_per_env_step),
        }
        if self.thread_tuner is not None:
            record["torch_threads"] = self.thread_tuner.current
        if self.env_steps > steps_before and updates_before > 0:  # the round that starts training has no ratio
            record["update_to_data_round"] = (self.total_updates - updates_before) / (self.env_steps - steps_before)
        for key, values in losses.items():
            record[key] = float(np.mean(values))
        for key, values in self._round_episodes.items():
            record[key] = float(np.mean(values))
        self._round_episodes.clear()
        record["samples_dropped"] = self._round_dropped
        # per worker: 0 in the rounds after its first drop, so that its curve does not bridge them
        for worker in sorted(self._dropping_workers):
            record[f"samples_dropped/{worker}"] = 0
        for (worker, where), samples in sorted(self._round_dropped_at.items()):
            record[f"samples_dropped/{worker}"] += samples
            record[f"samples_dropped/{worker}/{where}"] = samples
        self._round_dropped = 0
        self._round_dropped_at.clear()
        return record

    # -- state ---------------------------------------------------------------------------------------------------
    def state_dict(self, keep_memory: bool = True) -> dict[str, Any]:
        """Counters, the agent, the memory (if it can be saved and ``keep_memory``) and the RNG states."""
        state: dict[str, Any] = {
            "epoch": self.epoch,
            "round": self.round,
            "total_updates": self.total_updates,
            "total_samples": self.total_samples,
            "env_steps": self.env_steps,
            "episodes": self.episodes,
            "agent": ckpt.state_of(self.agent),
            "rng": ckpt.rng_state(),
            "memory": None,
        }
        if keep_memory:
            try:
                state["memory"] = self.memory.state_dict()
            except NotImplementedError as exc:
                log.warning("the memory is not checkpointed: %s", exc)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned.

        Raises:
            DamagedStateError: the counters or the RNG states do not fit :class:`TrainingState` (the agent's and the
                memory's own checks raise theirs).
        """
        try:
            checked = TrainingState.model_validate(state)
        except ValidationError as exc:
            raise DamagedStateError(f"training state: {_first_error(exc)}") from None
        ckpt.load_state_into(self.agent, checked.agent)
        if checked.memory is not None:
            self.memory.load_state_dict(checked.memory)
        try:
            ckpt.set_rng_state(checked.rng)
        except (KeyError, ValueError, TypeError, RuntimeError) as exc:
            what = f"{type(exc).__name__}: {exc}"
            raise DamagedStateError(f"training state: the RNG states do not load: {what}") from None
        for key in TrainingState.COUNTERS:
            setattr(self, key, getattr(checked, key))
        self._updates_at_last_send = -1


class TrainingState(BaseModel):
    """The schema of :meth:`TorchTrainingOffline.state_dict` as read back from a checkpoint."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    COUNTERS: ClassVar[tuple[str, ...]] = ("epoch", "round", "total_updates", "total_samples", "env_steps", "episodes")

    epoch: NonNegativeInt
    round: NonNegativeInt
    total_updates: NonNegativeInt
    total_samples: NonNegativeInt
    env_steps: NonNegativeInt
    episodes: NonNegativeInt
    agent: dict[str, Any]
    rng: dict[str, Any]
    memory: dict[str, Any] | None = None


class CheckpointFile(BaseModel):
    """The schema of the top level of a :class:`Trainer` checkpoint."""

    model_config = ConfigDict(extra="forbid")

    meta: dict[str, str | int | float | bool | None]
    training: dict[str, Any]
    #: rows of ``metrics.jsonl`` written when the checkpoint was; a resumed run drops the rows after them
    metrics_rows: NonNegativeInt | None = None


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"]) or "top level"
    return f"{where}: {error['msg']}"


# -- the Trainer ------------------------------------------------------------------------------------------------------


class Trainer:
    """Connects a training loop to the server; checkpoints, resumes, logs metrics.

    Arguments left out come from the settings.

    Args:
        training_cls: builds the training loop, e.g. ``partial(TorchTrainingOffline, ...)``.
        server_ip, server_port, password, security: where the server is (``server.*``).
        model_path: the actor's weights file, written at every checkpoint and at the end (default
            ``<data>/weights/<run>.safetensors``; None: not written).
        checkpoint_path: the checkpoint file (default ``<data>/checkpoints/<run>.safetensors`` when
            ``checkpoint.enabled``; None: no checkpoints).
        dump_run_instance_fn, load_run_instance_fn: replace the built-in checkpoint writer/reader:
            ``dump(training, path)`` and ``load(path) -> state`` (or a training instance).
        settings: the settings (default :func:`~tmrl_core.settings.load_settings`).
        transport: a :class:`~tmrl_core.transport.Transport`, or None for ``server.transport``; ``False`` trains
            offline, on what is in the memory (e.g. a dataset).
        metrics: a :class:`~tmrl_core.metrics.MetricsLogger` (default: the run's loggers, built from the settings).
        close_metrics: close ``metrics`` when the trainer closes (always done for the default one).
        on_round: called with every round's metrics (progress displays).
        checkpoint_meta: extra metadata checked on resume (e.g. env and algo names; a mismatch is an error).
    """

    def __init__(
        self,
        training_cls: Callable[..., Any],
        server_ip: str | None = None,
        server_port: int | None = None,
        password: str | None = None,
        security: str | None = None,
        model_path: str | Path | None = _DEFAULT,
        checkpoint_path: str | Path | None = _DEFAULT,
        dump_run_instance_fn: Callable[[Any, str], None] | None = None,
        load_run_instance_fn: Callable[[str], Any] | None = None,
        *,
        settings: Settings | None = None,
        transport: Transport | str | bool | None = None,
        metrics: MetricsLogger | None = None,
        on_round: Callable[[dict[str, Any]], None] | None = None,
        checkpoint_meta: dict[str, Any] | None = None,
        close_metrics: bool = False,
    ) -> None:
        self.settings = settings = settings_or_load(settings)
        self.run_name = settings.run.name
        if model_path is _DEFAULT:
            model_path = subdir("weights", create=False) / f"{self.run_name}.safetensors"
        if checkpoint_path is _DEFAULT:
            enabled = settings.checkpoint.enabled
            checkpoint_path = subdir("checkpoints", create=False) / f"{self.run_name}.safetensors" if enabled else None
        self.model_path = Path(model_path) if model_path is not None else None
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path is not None else None
        self.dump_run_instance_fn = dump_run_instance_fn
        self.load_run_instance_fn = load_run_instance_fn
        self.on_round = on_round
        self.meta = {"run": self.run_name, **(checkpoint_meta or {})}
        self.history: list[dict[str, Any]] = []
        self._warned_behind = False

        kwargs = {"settings": settings} if _accepts(training_cls, "settings") else {}
        self.training = training_cls(**kwargs)
        self._remove_stale_temporaries()
        self._metrics_rows: int | None = None
        self.resumed = self._resume()
        self._saved_at = self._progress() if self.resumed else None

        self._own_metrics = metrics is None or close_metrics
        if metrics is None:
            metrics = MetricsLogger(self.run_name, settings=settings)
        self.metrics = metrics
        if self._metrics_rows is not None and callable(getattr(metrics, "keep_rows", None)):
            metrics.keep_rows(self._metrics_rows)  # the rounds after the checkpoint run again: no duplicate rows

        self.endpoint = None
        if transport is not False:
            if transport is None or isinstance(transport, str):
                transport = make_transport(
                    settings,
                    server_ip=server_ip,
                    server_port=server_port,
                    password=password,
                    security=security,
                    transport=transport,
                )
            self.endpoint = transport.trainer()
        self.interface = _Interface(self.endpoint)

    # -- checkpoints ---------------------------------------------------------------------------------------------
    def _remove_stale_temporaries(self) -> None:
        """Delete what a kill during a previous checkpoint or weights write left (this trainer owns both files)."""
        for path in (self.checkpoint_path, self.model_path):
            if path is not None:
                for tmp in remove_stale_temporaries(path):
                    log.warning("trainer: removed %s, left by an interrupted write", tmp)

    def _resume(self) -> bool:
        path = self.checkpoint_path
        if path is None or not path.exists():
            return False
        if self.settings.run.reset_training:
            moved = ckpt.quarantine(path, "old")
            log.warning("trainer: reset_training: the previous checkpoint was moved to %s", moved)
            return False
        if self.load_run_instance_fn is not None:
            loaded = self.load_run_instance_fn(str(path))
            if isinstance(loaded, dict):
                self.training.load_state_dict(loaded)
            else:
                self.training = loaded
            return True
        raw = ckpt.load_state(path, kind="checkpoint")
        try:
            state = CheckpointFile.model_validate(raw)
        except ValidationError as exc:
            raise ckpt.damaged(f"checkpoint {path}", _first_error(exc)) from None
        for key, value in self.meta.items():
            if key in state.meta and state.meta[key] != value:
                raise CheckpointError(
                    f"checkpoint {path} was written with {key}={state.meta[key]!r}, not {value!r}",
                    hint="use another --run-name, or --reset to keep the old checkpoint aside and start afresh",
                )
        try:
            self.training.load_state_dict(state.training)
        except DamagedStateError as exc:
            # the file's digest matched, so this is a file written wrong or crafted: the same "damaged" error
            raise ckpt.damaged(f"checkpoint {path}", exc.message) from None
        except CheckpointError as exc:
            raise CheckpointError(f"checkpoint {path}: {exc.message}", hint=exc.hint) from None
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise CheckpointError(
                f"checkpoint {path} does not fit this training setup: {type(exc).__name__}: {exc}",
                hint="use another --run-name, or --reset to keep the old checkpoint aside and start afresh",
            ) from exc
        self._metrics_rows = state.metrics_rows
        log.info(
            "trainer: resumed %s at epoch %d round %d (%d env steps, %d transitions in memory)",
            self.run_name,
            self.training.epoch,
            self.training.round,
            self.training.env_steps,
            len(self.training.memory),
        )
        return True

    def _progress(self) -> tuple[int, int, int, int]:
        t = self.training
        return (t.epoch, t.round, t.total_updates, t.env_steps)

    def save_checkpoint(self) -> None:
        """Write the checkpoint (atomically) and the actor's weights file."""
        t0 = time.perf_counter()
        self._saved_at = self._progress()
        if self.checkpoint_path is not None:
            if self.dump_run_instance_fn is not None:
                self.dump_run_instance_fn(self.training, str(self.checkpoint_path))
            else:
                keep = self.settings.checkpoint.keep_memory
                state = {"meta": self.meta, "training": self.training.state_dict(keep)}
                rows = getattr(self.metrics, "rows", None)
                if isinstance(rows, int):
                    state["metrics_rows"] = rows
                ckpt.save_state(self.checkpoint_path, state)
        self.save_weights()
        log.info("trainer: checkpoint written in %.2f s", time.perf_counter() - t0)

    def save_weights(self) -> None:
        if self.model_path is not None:
            ckpt.save_weights(self.model_path, self.training.agent.get_actor().state_dict())

    # -- running ---------------------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask :meth:`run` to stop after the current training step (thread-safe); it then checkpoints and returns."""
        self.training.stop_event.set()

    def run(self) -> list[dict[str, Any]]:
        """Train until ``epochs`` or ``max_env_steps`` (or :meth:`stop`, or Ctrl-C); checkpoint at every epoch end
        and when stopping. Returns the metrics of every round."""
        training = self.training
        if getattr(training, "budget_reached", False):
            log.warning(
                "trainer: run %s already has %d env steps (training.max_env_steps=%s): nothing to do",
                self.run_name,
                training.env_steps,
                training.max_env_steps,
            )
            training.finished = True
        previous_handler = self._install_sigint()
        self._write_status("running")
        status, error = "failed", None
        try:
            if self.endpoint is not None:
                # workers start with the trainer's actor (a resumed one, too)
                if isinstance(training, TorchTrainingOffline):
                    training._send(self.interface)
                else:
                    self.interface.broadcast_model(training.agent.get_actor())
            while training.epoch < training.epochs and not training.finished and not training.stop_event.is_set():
                epoch = training.epoch
                if _accepts(training.run_epoch, "on_round"):
                    training.run_epoch(self.interface, on_round=self._log)
                else:  # a training class of its own: its records arrive at the end of the epoch
                    for record in training.run_epoch(self.interface):
                        self._log(record)
                if training.epoch != epoch and self.checkpoint_path is not None:
                    self.save_checkpoint()
            if training.stop_event.is_set():
                log.info("trainer: stopping")
            if self._saved_at != self._progress():
                if getattr(training, "total_updates", 1) == 0:
                    # a checkpoint of a run that never trained would only hold an untrained actor under this name
                    log.info("trainer: no training step was done: no checkpoint written")
                else:
                    self.save_checkpoint()
            stopped = training.stop_event.is_set() and not training.finished
            status = "interrupted" if stopped else "finished"
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        except BaseException as exc:
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self._restore_sigint(previous_handler)
            self.close()
            self._write_status(status, error)
        return self.history

    def _write_status(self, status: str, error: str | None = None) -> None:
        """``<data>/runs/<run>/status.json`` (what ``tmrl runs`` shows); a failure to write it only warns."""
        try:
            write_status(run_dir(self.run_name), status, error=error)
        except OSError as exc:
            log.warning("trainer: could not record the run's status %r: %s", status, exc)

    def run_with_wandb(
        self, entity: str | None = None, project: str | None = None, run_id: str | None = None, key: str | None = None
    ) -> list[dict[str, Any]]:
        """:meth:`run`, logging every round to wandb as well."""
        if self._own_metrics:
            self.metrics.close()
        self.metrics = MetricsLogger(
            self.run_name, settings=self.settings, wandb=True, entity=entity, project=project, run_id=run_id, key=key
        )
        self._own_metrics = True
        return self.run()

    def _log(self, record: dict[str, Any]) -> None:
        self.history.append(record)
        self.metrics.log(record)
        if self.on_round is not None:
            self.on_round(record)
        ret = record.get("return_test", record.get("return_train"))
        utd = record.get("update_to_data_round")
        log.info(
            "epoch %d round %d: %d env steps, %d training steps%s%s",
            record["epoch"],
            record["round"],
            record["env_steps"],
            record["training_steps"],
            f", {utd:.2f} training steps per env step" if utd is not None else "",
            f", return {ret:.1f}" if ret is not None and math.isfinite(ret) else "",
        )
        target = record.get("update_to_data_target")
        behind = utd is not None and target and record.get("complete") and utd < 0.5 * target
        if behind and getattr(self.training, "when_behind", None) != "wait" and not self._warned_behind:
            self._warned_behind = True
            log.warning(
                "trainer: %.2f training steps per env step this round, under half the target %.2f: the trainer cannot"
                " keep up with the workers (training.when_behind=wait makes them wait for it)",
                utd,
                target,
            )

    def _install_sigint(self) -> Any:
        if threading.current_thread() is not threading.main_thread():
            return None
        stop_event = self.training.stop_event

        def handler(signum: int, frame: FrameType | None) -> None:
            if stop_event.is_set():
                raise KeyboardInterrupt
            log.warning("trainer: Ctrl-C: stopping after a checkpoint (press again to abort without one)")
            stop_event.set()

        return signal.signal(signal.SIGINT, handler)

    @staticmethod
    def _restore_sigint(previous: Any) -> None:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)

    def close(self) -> None:
        """Disconnect and close the metrics file; idempotent."""
        if self.endpoint is not None:
            self.endpoint.close()
            self.endpoint = None
        if self._own_metrics and self.metrics is not None:
            self.metrics.close()
