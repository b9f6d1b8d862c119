"""Environments built into tmrl-core: ``GenericGymEnv``, ``pendulum``, any gymnasium id as ``gym:<id>``, and the
real-time dummy RC drone ``rc-drone`` (rtgym).

Every env factory has the signature ``factory(settings, **kwargs) -> gymnasium.Env`` where ``settings`` is the env's
validated settings section (or ``None``); ``*_spaces(settings)`` describe the spaces without running anything, so the
trainer never needs a live environment.
"""

from __future__ import annotations

import random
import threading
import time
from functools import partial
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces
from pydantic import Field
from rtgym import DEFAULT_CONFIG_DICT, RealTimeGymInterface

from tmrl_core.errors import ConfigError
from tmrl_core.settings.rtgym import ActBufLen, EpMaxLength, RtgymTiming
from tmrl_core.specs import EnvSpec

GYM_PREFIX = "gym:"


class GenericGymEnv(gymnasium.Wrapper):
    """Any registered gymnasium environment, made by id (rtgym environments included).

    Args:
        id: the gymnasium id, e.g. ``"Pendulum-v1"`` or ``"real-time-gym-ts-v1"``.
        gym_kwargs: keyword arguments of ``gymnasium.make`` (e.g. ``{"config": rtgym_config}``).
        to_float32: cast float64 observation arrays to float32 (what the networks expect).
    """

    def __init__(self, id: str = "Pendulum-v1", gym_kwargs: dict[str, Any] | None = None, to_float32: bool = False):
        kwargs = dict(gym_kwargs or {})
        # The passive checker steps through warnings only, and trips on rtgym's real-time semantics.
        kwargs.setdefault("disable_env_checker", True)
        try:
            env = gymnasium.make(id, **kwargs)
        except gymnasium.error.Error as exc:
            raise ConfigError(
                f"cannot make gymnasium environment {id!r}: {exc}",
                hint="check the id (gymnasium.pprint_registry() lists them) and that its package is installed",
            ) from exc
        super().__init__(env)
        self.to_float32 = to_float32

    def _cast(self, obs: Any) -> Any:
        if isinstance(obs, tuple):
            return tuple(self._cast(o) for o in obs)
        if isinstance(obs, np.ndarray) and obs.dtype == np.float64:
            return obs.astype(np.float32)
        return obs

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        return (self._cast(obs) if self.to_float32 else obs), info

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        obs, rew, terminated, truncated, info = self.env.step(action)
        return (self._cast(obs) if self.to_float32 else obs), rew, terminated, truncated, info


def is_realtime(env: gymnasium.Env) -> bool:
    """True for rtgym environments (they apply a default action at every reset)."""
    return hasattr(env.unwrapped, "default_action") and hasattr(env.unwrapped, "act_buf")


def carried_action_buffer(env: gymnasium.Env) -> list[np.ndarray] | None:
    """A copy of the rtgym action buffer that the next ``reset()`` carries over (``reset_act_buf=False``), else None.

    The worker keeps this copy at the end of every recorded episode and puts it back
    (:func:`restore_action_buffer`) before the next recorded reset when an unrecorded episode (a test episode, an
    interrupted one) ran in between. Without that, the next reset observation would hold the unrecorded episode's
    actions, which a memory that rebuilds action buffers from the previous recorded episode (the seed tutorial's)
    cannot know: it would build wrong transitions silently (and fail its CRC check in debug mode).
    """
    if not is_realtime(env) or getattr(env.unwrapped, "reset_act_buf", True):
        return None
    act_buf = env.unwrapped.act_buf
    return [np.array(a, copy=True) for a in act_buf] if act_buf else None


def restore_action_buffer(env: gymnasium.Env, saved: list[np.ndarray]) -> None:
    """Put back an action buffer saved by :func:`carried_action_buffer` (call it between episodes, before reset)."""
    act_buf = env.unwrapped.act_buf
    act_buf.clear()
    act_buf.extend(np.array(a, copy=True) for a in saved)


def reset_action(env: gymnasium.Env) -> np.ndarray:
    """The action of the reset sample; call it right after ``reset()``.

    For rtgym environments it is the action ``reset()`` applies, i.e. the newest entry of the action buffer (the
    default action, or the previous episode's last action with ``last_act_on_reset``); zeros for other environments.
    """
    act_buf = getattr(env.unwrapped, "act_buf", None) if is_realtime(env) else None
    if act_buf:
        return np.array(act_buf[-1], copy=True)
    space = env.action_space
    dtype = getattr(space, "dtype", None) or np.float32
    return np.zeros(getattr(space, "shape", None) or (), dtype=dtype)


# -- gymnasium environments -----------------------------------------------------------------------------------------


def make_gym_env(settings: Any = None, *, id: str, **kwargs: Any) -> GenericGymEnv:
    """Factory of ``gym:<id>`` environments (extra kwargs go to ``gymnasium.make``)."""
    return GenericGymEnv(id=id, gym_kwargs=kwargs, to_float32=True)


def gym_spaces(settings: Any = None, *, id: str, **kwargs: Any) -> tuple[spaces.Space, spaces.Space]:
    """The spaces of a gymnasium environment (made and closed; ``reset`` is never called)."""
    env = make_gym_env(settings, id=id, **kwargs)
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()


def make_pendulum(settings: Any = None, **kwargs: Any) -> GenericGymEnv:
    """gymnasium's ``Pendulum-v1`` (episodes truncated after 200 steps)."""
    return make_gym_env(settings, id="Pendulum-v1", **kwargs)


def pendulum_spaces(settings: Any = None) -> tuple[spaces.Space, spaces.Space]:
    high = np.array([1.0, 1.0, 8.0], dtype=np.float32)
    return spaces.Box(-high, high, dtype=np.float32), spaces.Box(-2.0, 2.0, shape=(1,), dtype=np.float32)


# -- the real-time dummy RC drone (rtgym) -------------------------------------------------------------------------


class RcDroneSettings(RtgymTiming):
    """Settings section ``rc_drone``: the rtgym timing knobs of the dummy RC drone."""

    ep_max_length: EpMaxLength = 100
    act_buf_len: ActBufLen = 4
    reset_act_buf: bool = Field(False, description="Fill the action buffer with default actions at every reset.")


class RcDrone:
    """The dummy RC drone of rtgym's tutorial, with the same physics and delays, as a simulation that can stop.

    The position integrates the velocity every ``control_sleep`` s inside a box of +-``world_size``; a velocity
    command and a position reading each arrive 20-50 ms after they were sent, the newest sent winning over a late
    older one. rtgym's own ``DummyRCDrone`` loops forever and starts one thread per message: every drone ever built
    kept waking 100 times a second until the process ended (a test session builds dozens of them, and each one took
    CPU and the GIL from every test after it). This one runs one thread, which :meth:`stop` ends.
    """

    def __init__(
        self, max_vel: float = 2.0, world_size: float = 1.0, control_sleep: float = 0.01,
        delay: tuple[float, float] = (0.02, 0.05),
    ) -> None:  # fmt: skip
        self.max_vel, self.world_size, self.control_sleep, self.delay = max_vel, world_size, control_sleep, delay
        self._rng = random.Random()
        self._lock = threading.Lock()
        self._pos = (0.0, 0.0)  # the true position, known only to the simulation
        self._vel = (0.0, 0.0)
        self._vel_sent_at = self._obs_sent_at = time.monotonic()
        self._obs = (0.0, 0.0)  # the last position reading that arrived
        # messages on their way: (arrival time, sending time, value)
        self._controls: list[tuple[float, float, tuple[float, float]]] = []
        self._readings: list[tuple[float, float, tuple[float, float]]] = []
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tmrl-rc-drone", daemon=True)
        self._thread.start()

    def send_control(self, vel_x: float, vel_y: float) -> None:
        norm = float(np.hypot(vel_x, vel_y))
        if norm > self.max_vel:
            vel_x, vel_y = vel_x * self.max_vel / norm, vel_y * self.max_vel / norm
        now = time.monotonic()
        with self._lock:
            self._controls.append((now + self._rng.uniform(*self.delay), now, (vel_x, vel_y)))

    def get_observation(self) -> tuple[float, float]:
        with self._lock:
            self._deliver(time.monotonic())
            return self._obs

    def stop(self) -> None:
        """End the simulation (idempotent); the drone stays where it is."""
        self._stopped.set()
        if self._thread is not threading.current_thread():
            self._thread.join()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _deliver(self, now: float) -> None:
        """Apply every message that has arrived by ``now`` (caller holds the lock)."""
        self._controls, arrived = _arrived(self._controls, now)
        for sent, vel in arrived:
            if sent > self._vel_sent_at:
                self._vel_sent_at, self._vel = sent, vel
        self._readings, arrived = _arrived(self._readings, now)
        for sent, pos in arrived:
            if sent > self._obs_sent_at:
                self._obs_sent_at, self._obs = sent, pos

    def _run(self) -> None:
        limit = self.world_size
        while not self._stopped.is_set():
            now = time.monotonic()
            with self._lock:
                self._deliver(now)
                self._readings.append((now + self._rng.uniform(*self.delay), now, self._pos))
                (x, y), (vx, vy) = self._pos, self._vel
                self._pos = (
                    min(max(x + vx * self.control_sleep, -limit), limit),
                    min(max(y + vy * self.control_sleep, -limit), limit),
                )
            self._stopped.wait(self.control_sleep)


def _arrived(messages: list[tuple[float, float, Any]], now: float) -> tuple[list[Any], list[tuple[float, Any]]]:
    """(the messages still on their way at ``now``, (sending time, value) of those that have arrived)."""
    return [m for m in messages if m[0] > now], [(sent, value) for arrival, sent, value in messages if arrival <= now]


class DummyRCDroneInterface(RealTimeGymInterface):
    """rtgym interface of the dummy RC drone (:class:`RcDrone`): reach a random target.

    Observations are the drone's (delayed) position and the target; actions are velocities; the reward is minus the
    distance to the target, and the episode terminates within 1 cm of it. The drone starts on the first reset; each
    drone started is appended to ``drones`` (when given), so that whoever owns the env can stop it.
    """

    def __init__(self, seed: int | None = None, drones: list[RcDrone] | None = None) -> None:
        self.rc_drone: RcDrone | None = None
        self.drones = drones if drones is not None else []
        self.target = np.zeros(2, dtype=np.float32)
        self.rng = np.random.default_rng(seed)

    def get_observation_space(self) -> spaces.Tuple:
        return drone_base_observation_space()

    def get_action_space(self) -> spaces.Box:
        return drone_action_space()

    def get_default_action(self) -> np.ndarray:
        return np.zeros(2, dtype=np.float32)

    def send_control(self, control: Any) -> None:
        if control is not None and self.rc_drone is not None:
            self.rc_drone.send_control(float(control[0]), float(control[1]))

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[list, dict]:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        if self.rc_drone is None:
            self.rc_drone = RcDrone()
            self.drones.append(self.rc_drone)
        self.target[:] = self.rng.uniform(-0.5, 0.5, size=2)
        return self._observation(), {}

    def _observation(self) -> list[np.ndarray]:
        assert self.rc_drone is not None
        pos_x, pos_y = self.rc_drone.get_observation()
        return [
            np.array([pos_x], dtype=np.float32),
            np.array([pos_y], dtype=np.float32),
            np.array([self.target[0]], dtype=np.float32),
            np.array([self.target[1]], dtype=np.float32),
        ]

    def get_obs_rew_terminated_info(self) -> tuple[list, float, bool, dict]:
        obs = self._observation()
        position = np.array([obs[0][0], obs[1][0]], dtype=np.float32)
        rew = -float(np.linalg.norm(position - self.target))
        return obs, rew, rew > -0.01, {}

    def wait(self) -> None:
        pass


def drone_base_observation_space() -> spaces.Tuple:
    """Position (x, y) and target (x, y), without the action buffer rtgym appends."""
    return spaces.Tuple(
        (
            spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32),
            spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32),
            spaces.Box(-0.5, 0.5, shape=(1,), dtype=np.float32),
            spaces.Box(-0.5, 0.5, shape=(1,), dtype=np.float32),
        )
    )


def drone_action_space() -> spaces.Box:
    return spaces.Box(-2.0, 2.0, shape=(2,), dtype=np.float32)


def rc_drone_config(
    settings: RcDroneSettings | None = None, seed: int | None = None, drones: list[RcDrone] | None = None
) -> dict[str, Any]:
    """The rtgym configuration dictionary of the dummy RC drone (the drone it starts is appended to ``drones``)."""
    s = settings or RcDroneSettings()
    config = dict(DEFAULT_CONFIG_DICT)
    config.update(
        interface=DummyRCDroneInterface,
        interface_kwargs={"seed": seed, "drones": drones},
        reset_act_buf=s.reset_act_buf,
        **s.rtgym_timing(),
    )
    return config


class RcDroneEnv(GenericGymEnv):
    """The dummy RC drone as an rtgym environment (``real-time-gym-ts-v1``); :meth:`close` stops the drone."""

    def __init__(self, settings: RcDroneSettings | None = None, seed: int | None = None) -> None:
        self.drones: list[RcDrone] = []
        super().__init__(id="real-time-gym-ts-v1", gym_kwargs={"config": rc_drone_config(settings, seed, self.drones)})

    def close(self) -> None:
        for drone in self.drones:
            drone.stop()
        super().close()


def make_rc_drone(settings: RcDroneSettings | None = None, *, seed: int | None = None, **_: Any) -> RcDroneEnv:
    """The dummy RC drone as an rtgym environment (``real-time-gym-ts-v1``)."""
    return RcDroneEnv(settings, seed)


def rc_drone_spaces(settings: RcDroneSettings | None = None) -> tuple[spaces.Space, spaces.Space]:
    """The drone's spaces as rtgym builds them (base observation + ``act_buf_len`` actions), without starting it."""
    s = settings or RcDroneSettings()
    act = drone_action_space()
    return spaces.Tuple((*drone_base_observation_space().spaces, *((act,) * s.act_buf_len))), act


def rc_drone_component_options(settings: RcDroneSettings | None = None) -> dict[str, Any]:
    """What the drone's compressor and memory need to rebuild observations."""
    s = settings or RcDroneSettings()
    return {"act_buf_len": s.act_buf_len}


def gym_env_spec(name: str) -> EnvSpec:
    """An :class:`~tmrl_core.specs.EnvSpec` for ``gym:<id>`` (any registered gymnasium id)."""
    gym_id = name[len(GYM_PREFIX) :]
    if not gym_id:
        raise ConfigError(f"environment {name!r} names no gymnasium id", hint="write e.g. --env gym:Pendulum-v1")
    return EnvSpec(
        name=name,
        factory=partial(make_gym_env, id=gym_id),
        spaces=partial(gym_spaces, id=gym_id),
        description=f"gymnasium environment {gym_id}",
        plugin="tmrl-core",
    )
