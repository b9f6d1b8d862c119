"""The reward: progress along a recorded reference trajectory of the track.

A trajectory is the path of one drive from the start line to the finish line, resampled to points a fixed distance
apart (0.1 m by default). It is stored as arrays in an ``.npz`` file (``positions``: ``(N, 3)`` float32 game
positions; ``spacing``: metres between points; ``version``), read back with ``allow_pickle=False``.

Each step, :class:`RewardFunction` finds the trajectory point nearest to the car, searching from the current point
forwards (windows of ``check_forward`` points, extended while the nearest point keeps moving ahead, which lets an
agent cut corners) and, when that finds no progress, backwards (``check_backward`` points). The reward is the index
difference divided by 100 (at 0.1 m spacing: 1 per 10 m), plus ``constant_penalty``; crossing the finish line adds
``end_of_track``. Once ``min_steps`` steps have passed, ``failure_countdown`` steps in a row without progress end the
episode, and so does straying more than ``max_stray`` metres from the trajectory.

Unlike the original (which gave 0 when the car went back), going backwards costs exactly what going forwards earns,
so that driving back and forth cannot farm reward.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tmrl_core.errors import TmrlError
from tmrl_trackmania.telemetry import TelemetryClient, TelemetryError

TRAJECTORY_VERSION = 1
#: reward per trajectory point of progress
REWARD_PER_POINT = 0.01


class RewardFileError(TmrlError):
    """The reference trajectory is missing or unreadable."""


@dataclass(frozen=True)
class Trajectory:
    """A reference path: ``positions`` ``(N, 3)`` float32, ``spacing`` metres apart."""

    positions: np.ndarray
    spacing: float

    def __post_init__(self) -> None:
        pos = np.asarray(self.positions, dtype=np.float32)
        if pos.ndim != 2 or pos.shape[1] != 3 or len(pos) < 2:
            raise ValueError(f"a trajectory is an (N >= 2, 3) array of positions, got shape {pos.shape}")
        object.__setattr__(self, "positions", pos)

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def length(self) -> float:
        return float(np.linalg.norm(np.diff(self.positions, axis=0), axis=1).sum())

    @classmethod
    def from_path(cls, points: np.ndarray, spacing: float = 0.1) -> Trajectory:
        """Resample a recorded path (``(M, 3)`` positions, possibly repeated while standing) every ``spacing`` m."""
        return cls(resample_path(points, spacing), spacing)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(
            tmp,
            positions=self.positions,
            spacing=np.float64(self.spacing),
            version=np.int64(TRAJECTORY_VERSION),
        )
        tmp.replace(path)  # readers never see a half-written file
        return path

    @classmethod
    def load(cls, path: str | Path) -> Trajectory:
        path = Path(path)
        if not path.is_file():
            raise RewardFileError(
                f"no reference trajectory at {path}",
                hint="record one: start the track in the game and run `tmrl trackmania record-reward` (or set "
                "trackmania.reward_path)",
            )
        try:
            with np.load(path, allow_pickle=False) as data:
                version = int(data["version"])
                if version != TRAJECTORY_VERSION:
                    raise RewardFileError(
                        f"{path} is a version {version} trajectory; this tmrl-trackmania reads version "
                        f"{TRAJECTORY_VERSION}",
                        hint="record it again with `tmrl trackmania record-reward`",
                    )
                return cls(np.asarray(data["positions"]), float(data["spacing"]))
        except RewardFileError:
            raise
        except (OSError, KeyError, ValueError) as exc:
            raise RewardFileError(
                f"cannot read the reference trajectory {path}: {exc}",
                hint="record it again with `tmrl trackmania record-reward`",
            ) from exc


def resample_path(points: np.ndarray, spacing: float) -> np.ndarray:
    """Points every ``spacing`` metres of arc length along the polyline ``points`` (vectorised)."""
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or len(pts) == 0:
        raise ValueError("a path is a non-empty (M, D) array")
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    keep = np.concatenate([[True], seg > 1e-9])  # standing still adds nothing to the path
    pts = pts[keep]
    if len(pts) < 2:
        raise ValueError("the recorded path does not move: drive along the track while recording")
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))])
    targets = np.arange(0.0, arc[-1] + 1e-9, spacing)
    out = np.stack([np.interp(targets, arc, pts[:, d]) for d in range(pts.shape[1])], axis=1)
    return out.astype(np.float32)


class RewardFunction:
    """Progress along a :class:`Trajectory` (see the module docstring for the mechanics)."""

    def __init__(
        self,
        trajectory: Trajectory,
        *,
        check_forward: int = 500,
        check_backward: int = 10,
        failure_countdown: int = 10,
        min_steps: int = 70,
        max_stray: float = 100.0,
        constant_penalty: float = 0.0,
        end_of_track: float = 100.0,
    ) -> None:
        self.trajectory = trajectory
        self.points = trajectory.positions.astype(np.float64)
        self.check_forward = check_forward
        self.check_backward = check_backward
        self.failure_countdown = failure_countdown
        self.min_steps = min_steps
        self.max_stray = max_stray
        self.constant_penalty = constant_penalty
        self.end_of_track = end_of_track
        self.reset()

    def reset(self) -> None:
        self.index = 0
        self.steps = 0
        self.no_progress = 0
        self.finished = False  # the car crossed the finish line in this episode

    @property
    def progress(self) -> float:
        """How far along the trajectory the car is, from 0 (start) to 1 (end)."""
        return self.index / (len(self.points) - 1)

    def _dist(self, lo: int, hi: int, pos: np.ndarray) -> np.ndarray:
        delta = self.points[lo:hi] - pos
        return np.sqrt(np.einsum("ij,ij->i", delta, delta))

    def _search_forward(self, pos: np.ndarray) -> tuple[int, float]:
        """The walk forward while a point no farther than the best so far lies within ``check_forward`` points of
        it: the last minimum of each window, windows restarted from it until a window adds nothing."""
        n = len(self.points)
        best = self.index
        best_d = float(self._dist(best, best + 1, pos)[0])
        lo = best
        while True:
            hi = min(n, best + self.check_forward + 1)
            if hi <= lo + 1:
                return best, best_d
            d = self._dist(lo + 1, hi, pos)
            # the last index reaching the window's minimum, like a walk that moves on ties
            k = len(d) - 1 - int(np.argmin(d[::-1]))
            if d[k] > best_d:
                return best, best_d
            best, best_d = lo + 1 + k, float(d[k])
            lo = hi - 1

    def _search_backward(self, pos: np.ndarray) -> tuple[int, float]:
        """The same walk backwards, with windows of ``check_backward`` points."""
        best = self.index
        best_d = float(self._dist(best, best + 1, pos)[0])
        hi = best
        while True:
            lo = max(0, best - self.check_backward)
            if lo >= hi:
                return best, best_d
            d = self._dist(lo, hi, pos)
            k = int(np.argmin(d))  # the earliest minimum, like a walk backwards that moves on ties
            if d[k] > best_d:
                return best, best_d
            best, best_d = lo + k, float(d[k])
            hi = lo

    def step(self, position: np.ndarray, finished: bool = False) -> tuple[float, bool]:
        """Reward and ``terminated`` for the car at ``position`` (``(x, y, z)``) after one more time step."""
        pos = np.asarray(position, dtype=np.float64)
        self.steps += 1
        new, dist = self._search_forward(pos)
        if new == self.index:
            new, dist = self._search_backward(pos)
        terminated = False
        if dist > self.max_stray:
            new = self.index  # far from the track: no progress can be read, and the episode ends
            terminated = True
        reward = (new - self.index) * REWARD_PER_POINT + self.constant_penalty
        if new > self.index:
            self.no_progress = 0
        elif self.steps > self.min_steps:
            self.no_progress += 1
            if self.no_progress > self.failure_countdown:
                terminated = True
        self.index = new
        if finished:
            reward += self.end_of_track
            terminated = True
            self.finished = True
        return float(reward), terminated


def record_trajectory(
    telemetry: TelemetryClient,
    *,
    spacing: float = 0.1,
    timeout: float = 600.0,
    on_record: Callable[[object], None] | None = None,
    start_distance: float = 1.0,
    on_start: Callable[[], None] | None = None,
) -> Trajectory:
    """Record positions from a :class:`~tmrl_trackmania.telemetry.TelemetryClient` until the finish line.

    Recording starts with the first record of a car on the start line (race distance below ``start_distance`` m, not
    finished), so that a drive already under way when recording begins is never saved as a partial trajectory:
    the driver respawns to start. It starts again when the car respawns (the race distance goes back), and stops at
    the first finished record. ``on_start`` is called once recording has started.
    """
    deadline = time.monotonic() + timeout
    positions: list[np.ndarray] = []
    seq = None
    distance = -np.inf
    started = False
    while True:
        if time.monotonic() > deadline:
            what = "reach the finish line" if started else "stand on the start line (respawn to start)"
            raise TelemetryError(
                f"the car did not {what} within {timeout:g} s of recording",
                hint="respawn, then drive from the start line to the finish line while record-reward runs (or raise "
                "--timeout)",
            )
        rec = telemetry.wait_next(seq)
        seq = rec.seq
        if on_record is not None:
            on_record(rec)
        if rec.distance < distance - 1.0:  # a respawn: the drive starts again from the start line
            positions.clear()
        distance = rec.distance
        if not started:
            if rec.is_finished or rec.distance > start_distance:
                continue
            started = True
            if on_start is not None:
                on_start()
        if rec.is_finished:
            if positions:
                positions.append(rec.position)
                break
            continue
        positions.append(rec.position)
    return Trajectory.from_path(np.stack(positions), spacing)
