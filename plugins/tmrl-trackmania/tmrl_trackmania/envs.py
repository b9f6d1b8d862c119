"""The TrackMania environments: rtgym real-time interfaces and their gymnasium factories.

Action space (all three): ``Box(-1, 1, (3,), float32)``: ``[gas, brake, steer]``. Gas and brake press their trigger
(or key) by the positive part of the value, steer is the stick position (negative left). The default action, applied
after every reset, is ``[0, 0, 0]``.

Observation spaces: a ``Tuple``, in this order (``K`` = ``history_length``, ``A`` = ``act_buf_len``):

``trackmania-full``
    ``speed`` ``Box(0, 1000, (1,))`` km/h; ``gear`` ``Box(0, 6, (1,))``; ``rpm`` ``Box(0, 11000, (1,))``;
    ``images`` ``Box(0, 255, (K, img_height, img_width), uint8)`` grayscale or ``(K, img_height, img_width, 3)`` RGB,
    oldest first; then ``A`` actions ``Box(-1, 1, (3,))``, oldest first (rtgym's action buffer).
``trackmania-lidar``
    ``speed`` ``Box(0, 1000, (1,))``; ``lidar`` ``Box(0, L, (K, 19))`` beam lengths in pixels of the game window
    (``L`` = the longest beam that fits in the window), oldest first; then the ``A`` actions.
``trackmania-lidar-progress``
    ``speed``; ``progress`` ``Box(0, 1, (1,))`` along the reference trajectory; ``lidar``; then the ``A`` actions.

All floats are float32. At a reset the history is filled with ``K`` copies of the first frame or reading, and the
action buffer with default actions.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import deque
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from gymnasium import spaces
from rtgym import DEFAULT_CONFIG_DICT, RealTimeGymInterface
from rtgym.envs.real_time_env import RealTimeEnv

from tmrl_core.paths import subdir
from tmrl_trackmania.capture import Preprocessor
from tmrl_trackmania.control import action_to_inputs
from tmrl_trackmania.game import open_game
from tmrl_trackmania.lidar import NB_BEAMS, Lidar
from tmrl_trackmania.reward import RewardFunction, Trajectory
from tmrl_trackmania.settings import SettingsValues, TrackmaniaSettings, coerce_settings
from tmrl_trackmania.sim.track import build_track

log = logging.getLogger(__name__)

SPEED_MAX = 1000.0
GEAR_MAX = 6.0
RPM_MAX = 11000.0


def action_space() -> spaces.Box:
    return spaces.Box(low=-1.0, high=1.0, shape=(3,), dtype=np.float32)


def _scalar(high: float) -> spaces.Box:
    return spaces.Box(low=0.0, high=high, shape=(1,), dtype=np.float32)


def lidar_length(settings: TrackmaniaSettings) -> float:
    """Upper bound of a LIDAR reading for these settings (the longest beam fitting in the window)."""
    return float(_make_lidar(settings).edge_lengths.max())


def _make_lidar(settings: TrackmaniaSettings) -> Lidar:
    w, h = settings.window_width, settings.window_height
    return Lidar(
        w,
        h,
        origin=((w - 1) / 2.0, min(h - 1.0, settings.lidar_origin * h)),
        black_threshold=settings.lidar_black_threshold,
    )


def reward_file(settings: TrackmaniaSettings) -> Path:
    """Where the reference trajectory is read from and recorded to."""
    if settings.reward_path is not None:
        return Path(settings.reward_path).expanduser()
    name = f"trackmania-sim-{settings.sim.track}.npz" if settings.backend == "simulated" else "trackmania.npz"
    return subdir("reward", create=False) / name


def load_trajectory(settings: TrackmaniaSettings) -> Trajectory:
    """The reference trajectory; the simulator falls back to its track's centre line when none was recorded."""
    path = reward_file(settings)
    if settings.backend == "simulated" and settings.reward_path is None and not path.is_file():
        log.info("no recorded trajectory at %s: the reward follows the simulated track's centre line", path)
        return Trajectory.from_path(build_track(settings.sim.track).positions3d(), settings.reward_spacing)
    return Trajectory.load(path)


class StepTiming:
    """Counts rtgym's timed-out time steps by replaying its elastic clock at each control (rtgym only warns)."""

    def __init__(self, duration: float, timeout_factor: float) -> None:
        self.duration = duration
        self.timeout = duration * timeout_factor
        self._t_end: float | None = None
        self._waiting = False
        self._last: float | None = None
        self.steps = 0
        self.timed_out = 0
        #: time between consecutive controls of an episode, summed, and how many such intervals: their ratio is the
        #: real step duration (never below ``duration``: rtgym waits for the end of each time step)
        self.seconds = 0.0
        self.intervals = 0

    def on_control(self, now: float) -> None:
        # the first control after wait() is the reset's: the pause between episodes is neither a timeout nor a step
        waiting, self._waiting = self._waiting, False
        if self._last is not None and not waiting:
            self.seconds += now - self._last
            self.intervals += 1
        self._last = now
        if self._t_end is None:
            self._t_end = now  # rtgym starts its clock at the first reset
        if now < self._t_end + self.timeout:
            start = self._t_end
        else:
            if not waiting:
                self.timed_out += 1
            start = now
        self._t_end = start + self.duration
        self.steps += 1

    def on_wait(self) -> None:
        self._waiting = True
        self._last = None


class TrackmaniaInterface(RealTimeGymInterface):
    """What the three environments share: the game link, the reward, the timing count, the history.

    Args:
        settings: the ``trackmania`` settings section (or a dict of it); keyword overrides are applied on top.
    """

    kind: ClassVar[str] = "base"

    def __init__(self, settings: TrackmaniaSettings | dict | None = None, **overrides: Any) -> None:
        self.settings = coerce_settings(settings, **overrides)
        s = self.settings
        self.trajectory = load_trajectory(s)
        self.reward_function = RewardFunction(
            self.trajectory,
            check_forward=s.check_forward,
            check_backward=s.check_backward,
            failure_countdown=s.failure_countdown,
            min_steps=s.min_steps,
            max_stray=s.max_stray,
            constant_penalty=s.constant_penalty,
            end_of_track=s.end_of_track,
        )
        self.history: deque[np.ndarray] = deque(maxlen=s.history_length)
        self.timing = StepTiming(s.time_step_duration, s.time_step_timeout_factor)
        self._logged: tuple[int, int, int, float] = (0, 0, 0, 0.0)
        self.episodes = 0
        #: an error raised in rtgym's capture thread, re-raised by the env's next step()
        self.error: BaseException | None = None
        #: the newest window frame and what was computed from it (a LIDAR reading or an image), set together
        self.last_capture: tuple[np.ndarray, np.ndarray] | None = None
        self.last_record: Any = None
        self.link = open_game(s)

    # -- spaces ---------------------------------------------------------------------------------------------------
    @classmethod
    def observation_space_for(cls, settings: TrackmaniaSettings) -> spaces.Tuple:
        """The interface's observation space (without rtgym's action buffer)."""
        raise NotImplementedError

    def get_observation_space(self) -> spaces.Tuple:
        return self.observation_space_for(self.settings)

    def get_action_space(self) -> spaces.Box:
        return action_space()

    def get_default_action(self) -> np.ndarray:
        return np.zeros(3, dtype=np.float32)

    # -- what each environment observes ---------------------------------------------------------------------------
    def features(self, frame: np.ndarray) -> np.ndarray:
        """One history entry from one window frame."""
        raise NotImplementedError

    def assemble(self, record: Any, history: np.ndarray) -> list[np.ndarray]:
        raise NotImplementedError

    # -- rtgym's interface ----------------------------------------------------------------------------------------
    def send_control(self, control: np.ndarray | None) -> None:
        if control is not None:
            self.link.controller.apply(*action_to_inputs(control))
        self.timing.on_control(time.perf_counter())

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[list[np.ndarray], dict]:
        self._log_timing()
        self.error = None
        link = self.link
        link.controller.release()
        link.controller.respawn()
        if self.settings.sleep_time_at_reset > 0:
            time.sleep(self.settings.sleep_time_at_reset)
        # a record sent after the respawn: skip one that may have left before it
        record = link.telemetry.wait_next(link.telemetry.seq + 1)
        frame = link.frames.grab()
        self.reward_function.reset()
        first = self.features(frame)
        self.history.clear()
        for _ in range(self.settings.history_length):
            self.history.append(first)
        self.last_capture, self.last_record = (frame, first), record
        self.episodes += 1
        return self.assemble(record, np.stack(self.history)), {}

    def get_obs_rew_terminated_info(self) -> tuple[list[np.ndarray], float, bool, dict]:
        try:
            record = self.link.telemetry.latest(max_age=self.settings.telemetry_timeout)
            frame = self.link.frames.grab()
            reward, terminated = self.reward_function.step(record.position, finished=record.is_finished)
            feature = self.features(frame)
            self.history.append(feature)
        except Exception as exc:  # noqa: BLE001 - this runs in rtgym's thread; the env re-raises it in step()
            self.error = exc
            obs = self.assemble(self.last_record, np.stack(self.history)) if self.last_record is not None else []
            return obs, 0.0, True, {}
        self.last_capture, self.last_record = (frame, feature), record
        return self.assemble(record, np.stack(self.history)), reward, terminated, {}

    def wait(self) -> None:
        self.timing.on_wait()
        self.link.controller.release()
        if self.last_record is not None and self.last_record.is_finished:
            self.link.controller.close_finish_popup()
        self._log_timing()

    def _log_timing(self) -> None:
        t = self.timing
        steps, timed_out = t.steps, t.timed_out
        if self.settings.timing_log is None or (steps, timed_out) == self._logged[:2]:
            return
        entry = {
            "pid": os.getpid(),
            "env": self.kind,
            "episode": self.episodes,
            "steps": steps - self._logged[0],
            "timed_out": timed_out - self._logged[1],
            "intervals": t.intervals - self._logged[2],
            "seconds": round(t.seconds - self._logged[3], 6),
            "total_steps": steps,
            "total_timed_out": timed_out,
        }
        self._logged = (steps, timed_out, t.intervals, t.seconds)
        path = Path(self.settings.timing_log).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")

    def close(self) -> None:
        self._log_timing()
        self.link.close()


class FullInterface(TrackmaniaInterface):
    """``trackmania-full``: speed, gear, rpm and a history of screenshots."""

    kind = "full"

    def __init__(self, settings: TrackmaniaSettings | dict | None = None, **overrides: Any) -> None:
        super().__init__(settings, **overrides)
        s = self.settings
        self.preprocess = Preprocessor(s.img_width, s.img_height, s.grayscale)

    @classmethod
    def observation_space_for(cls, settings: TrackmaniaSettings) -> spaces.Tuple:
        s = settings
        shape: tuple[int, ...] = (s.history_length, s.img_height, s.img_width)
        if not s.grayscale:
            shape = (*shape, 3)
        return spaces.Tuple(
            (
                _scalar(SPEED_MAX),
                _scalar(GEAR_MAX),
                _scalar(RPM_MAX),
                spaces.Box(low=0, high=255, shape=shape, dtype=np.uint8),
            )
        )

    def features(self, frame: np.ndarray) -> np.ndarray:
        return self.preprocess(frame)

    def assemble(self, record: Any, history: np.ndarray) -> list[np.ndarray]:
        return [
            np.array([record.speed], dtype=np.float32),
            np.array([record.gear], dtype=np.float32),
            np.array([record.rpm], dtype=np.float32),
            history,
        ]


class LidarInterface(TrackmaniaInterface):
    """``trackmania-lidar``: speed and a history of 19-beam LIDAR readings."""

    kind = "lidar"

    def __init__(self, settings: TrackmaniaSettings | dict | None = None, **overrides: Any) -> None:
        super().__init__(settings, **overrides)
        self.lidar = _make_lidar(self.settings)

    @classmethod
    def observation_space_for(cls, settings: TrackmaniaSettings) -> spaces.Tuple:
        lidar = spaces.Box(
            low=0.0, high=lidar_length(settings), shape=(settings.history_length, NB_BEAMS), dtype=np.float32
        )
        return spaces.Tuple((_scalar(SPEED_MAX), lidar))

    def features(self, frame: np.ndarray) -> np.ndarray:
        return self.lidar.read(frame)

    def assemble(self, record: Any, history: np.ndarray) -> list[np.ndarray]:
        return [np.array([record.speed], dtype=np.float32), history]


class LidarProgressInterface(LidarInterface):
    """``trackmania-lidar-progress``: speed, progress along the trajectory, and the LIDAR history."""

    kind = "lidar-progress"

    @classmethod
    def observation_space_for(cls, settings: TrackmaniaSettings) -> spaces.Tuple:
        speed, lidar = LidarInterface.observation_space_for(settings).spaces
        return spaces.Tuple((speed, _scalar(1.0), lidar))

    def assemble(self, record: Any, history: np.ndarray) -> list[np.ndarray]:
        progress = np.array([self.reward_function.progress], dtype=np.float32)
        return [np.array([record.speed], dtype=np.float32), progress, history]


INTERFACES: dict[str, type[TrackmaniaInterface]] = {
    "trackmania-full": FullInterface,
    "trackmania-lidar": LidarInterface,
    "trackmania-lidar-progress": LidarProgressInterface,
}


class TrackmaniaEnv(RealTimeEnv):
    """rtgym's real-time env, plus: errors of the capture thread are raised by ``step()``, and ``close()`` releases
    the controls and the game link."""

    @property
    def tm_interface(self) -> TrackmaniaInterface:
        return self.interface

    @property
    def episode_metrics(self) -> dict[str, float]:
        """Read by the worker after each episode (train and test) and logged with the episode's kind as suffix:
        ``progress_train`` / ``progress_test``, the share of the reference trajectory covered, 0 to 1 (1: the whole
        track); ``finished_train`` / ``finished_test``, 1 when the car crossed the finish line, else 0 (a lap told
        apart from a return, which depends on ``end_of_track``)."""
        rf = self.interface.reward_function
        return {"progress": float(rf.progress), "finished": float(rf.finished)}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        result = super().step(action)
        error = self.interface.error
        if error is not None:
            self.interface.error = None
            self.running = False
            raise error
        return result

    def close(self) -> None:
        try:
            self._join_thread()
        finally:
            self.interface.close()


def rtgym_config(interface: type[TrackmaniaInterface], settings: TrackmaniaSettings) -> dict[str, Any]:
    """The rtgym configuration dictionary of an environment."""
    config = dict(DEFAULT_CONFIG_DICT)
    config.update(
        interface=interface,
        interface_args=(),
        interface_kwargs={"settings": settings},
        time_step_duration=settings.time_step_duration,
        start_obs_capture=settings.start_obs_capture,
        time_step_timeout_factor=settings.time_step_timeout_factor,
        ep_max_length=settings.ep_max_length,
        act_in_obs=True,
        act_buf_len=settings.act_buf_len,
        reset_act_buf=True,  # required with wait(): the buffer restarts from default actions
        wait_on_done=settings.wait_on_done,
        benchmark=settings.benchmark,
    )
    return config


def _make(name: str, settings: SettingsValues, overrides: dict[str, Any]) -> TrackmaniaEnv:
    s = coerce_settings(settings, **overrides)
    return TrackmaniaEnv(rtgym_config(INTERFACES[name], s))


def make_full(settings: TrackmaniaSettings | dict | None = None, **overrides: Any) -> TrackmaniaEnv:
    """``trackmania-full`` as a gymnasium env (connects to the game, or starts the simulator)."""
    return _make("trackmania-full", settings, overrides)


def make_lidar(settings: TrackmaniaSettings | dict | None = None, **overrides: Any) -> TrackmaniaEnv:
    """``trackmania-lidar`` as a gymnasium env."""
    return _make("trackmania-lidar", settings, overrides)


def make_lidar_progress(settings: TrackmaniaSettings | dict | None = None, **overrides: Any) -> TrackmaniaEnv:
    """``trackmania-lidar-progress`` as a gymnasium env."""
    return _make("trackmania-lidar-progress", settings, overrides)


# -- what the trainer needs without a game -------------------------------------------------------------------------


def _spaces(name: str, settings: SettingsValues) -> tuple[spaces.Tuple, spaces.Box]:
    s = coerce_settings(settings)
    inner = INTERFACES[name].observation_space_for(s)
    act = action_space()
    return spaces.Tuple((*inner.spaces, *([act] * s.act_buf_len))), act


def spaces_full(settings: SettingsValues = None) -> tuple[spaces.Tuple, spaces.Box]:
    """``(observation_space, action_space)`` of ``trackmania-full``, action buffer included."""
    return _spaces("trackmania-full", settings)


def spaces_lidar(settings: SettingsValues = None) -> tuple[spaces.Tuple, spaces.Box]:
    return _spaces("trackmania-lidar", settings)


def spaces_lidar_progress(settings: SettingsValues = None) -> tuple[spaces.Tuple, spaces.Box]:
    return _spaces("trackmania-lidar-progress", settings)
