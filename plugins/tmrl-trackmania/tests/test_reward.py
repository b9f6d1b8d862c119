"""The reward: trajectories as arrays, the search along them, and record-reward against the simulated car."""

from __future__ import annotations

import numpy as np
import pytest
from tmrl_trackmania.reward import REWARD_PER_POINT, RewardFileError, RewardFunction, Trajectory, resample_path


def straight(length: float = 100.0, spacing: float = 0.1) -> Trajectory:
    pts = np.array([[0.0, 9.0, 0.0], [length, 9.0, 0.0]])
    return Trajectory.from_path(pts, spacing)


def greedy_walk(points: np.ndarray, cur: int, pos: np.ndarray, window: int, step: int) -> int:
    """The original's walk (``step`` +1 ahead, -1 behind): move on while a point no farther than the best lies within
    ``window`` points."""
    best_d, best, idx, budget = np.inf, cur, cur, window + 1
    while True:
        d = np.linalg.norm(pos - points[idx])
        if d <= best_d:
            best_d, best, budget = d, idx, window + 1
        idx, budget = idx + step, budget - 1
        if not 0 <= idx < len(points) or budget <= 0:
            return best


def test_resampling_spaces_points_evenly_and_drops_standstill():
    raw = np.array([[0, 0, 0], [0, 0, 0], [3, 0, 0], [3, 0, 0], [3, 4, 0]], dtype=np.float64)
    out = resample_path(raw, 0.5)
    assert out.dtype == np.float32 and out.shape == (15, 3)  # 7 m of path: 0, 0.5, ..., 7.0
    steps = np.linalg.norm(np.diff(out, axis=0), axis=1)
    assert np.allclose(steps[:6], 0.5) and np.allclose(steps[7:], 0.5)
    np.testing.assert_allclose(out[-1], [3, 4, 0], atol=1e-6)
    with pytest.raises(ValueError, match="does not move"):
        resample_path(np.zeros((5, 3)), 0.1)


def test_trajectory_files_are_arrays_not_pickles(tmp_path):
    traj = straight(10.0)
    path = traj.save(tmp_path / "reward" / "t.npz")
    back = Trajectory.load(path)
    np.testing.assert_array_equal(back.positions, traj.positions)
    assert back.spacing == pytest.approx(0.1)
    with np.load(path, allow_pickle=False) as data:
        assert set(data.files) == {"positions", "spacing", "version"}

    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, positions=np.array([object()] * 3, dtype=object), spacing=0.1, version=1)
    with pytest.raises(RewardFileError, match="cannot read"):
        Trajectory.load(pickled)
    with pytest.raises(RewardFileError) as info:
        Trajectory.load(tmp_path / "missing.npz")
    assert "record-reward" in info.value.hint


def test_search_windows_equal_the_original_walk():
    rng = np.random.default_rng(7)
    for _ in range(500):
        n = int(rng.integers(2, 60))
        pts = np.cumsum(rng.normal(size=(n, 3)), axis=0)
        if rng.random() < 0.3:
            pts = np.round(pts)  # ties
        fwd, bwd = int(rng.integers(1, 12)), int(rng.integers(1, 12))
        rf = RewardFunction(Trajectory(pts.astype(np.float32), 0.1), check_forward=fwd, check_backward=bwd)
        rf.index = int(rng.integers(0, n))
        pos = pts[rng.integers(0, n)] + rng.normal(size=3) * rng.random() * 3
        assert rf._search_forward(pos)[0] == greedy_walk(rf.points, rf.index, pos, fwd, +1)
        assert rf._search_backward(pos)[0] == greedy_walk(rf.points, rf.index, pos, bwd, -1)


def test_progress_is_rewarded_and_going_back_costs_it_back():
    rf = RewardFunction(straight(), check_forward=500, min_steps=1000)
    total = 0.0
    for x in np.arange(0.5, 20.01, 0.5):
        reward, terminated = rf.step(np.array([x, 9.0, 0.3]))
        assert reward > 0 and not terminated
        total += reward
    assert total == pytest.approx(20.0 / 0.1 * REWARD_PER_POINT, abs=0.02)  # 1 per 10 m
    assert rf.progress == pytest.approx(0.2, abs=0.002)
    back = 0.0
    for x in np.arange(19.9, 14.95, -0.1):  # reversing, within the backward search window each step
        reward, _ = rf.step(np.array([x, 9.0, 0.0]))
        assert reward <= 0
        back += reward
    assert back == pytest.approx(-5.0 / 0.1 * REWARD_PER_POINT, abs=0.02)


def test_stalling_ends_the_episode_after_the_countdown_once_min_steps_passed():
    rf = RewardFunction(straight(), failure_countdown=5, min_steps=10, constant_penalty=-0.1)
    pos = np.array([1.0, 9.0, 0.0])
    rewards, ended_at = [], None
    for step in range(1, 40):
        reward, terminated = rf.step(pos)
        rewards.append(reward)
        if terminated:
            ended_at = step
            break
    # step 1 makes progress (to 1 m); steps 2..10 are within min_steps; steps 11..15 count down; 16 ends it
    assert ended_at == 16
    assert rewards[1:] == pytest.approx([-0.1] * 15)  # no progress: only the constant penalty


def test_finish_bonus_and_straying():
    rf = RewardFunction(straight(), end_of_track=100.0, max_stray=5.0)
    reward, terminated = rf.step(np.array([99.9, 9.0, 0.0]), finished=True)
    assert terminated and reward == pytest.approx(100.0 + 999 * REWARD_PER_POINT, abs=0.02)
    assert rf.finished
    rf.reset()
    assert not rf.finished
    reward, terminated = rf.step(np.array([3.0, 9.0, 6.0]))  # 6 m beside the trajectory
    assert terminated and reward == 0.0 and rf.index == 0


def test_record_reward_follows_the_simulated_car(run_tmrl, tmrl_home):
    """`tmrl trackmania record-reward` records the simulated car's drive; its reward rewards driving it."""
    result = run_tmrl(
        "trackmania",
        "record-reward",
        "--timeout",
        "60",
        "--set",
        "trackmania.backend=simulated",
        "--set",
        "trackmania.sim.time_scale=8",
        timeout=120,
    )
    assert result.returncode == 0, str(result)
    path = tmrl_home / "reward" / "trackmania-sim-default.npz"
    assert path.is_file() and "Saved" in result.stdout
    traj = Trajectory.load(path)

    from tmrl_trackmania.sim.track import build_track

    track = build_track("default")
    steps = np.linalg.norm(np.diff(traj.positions, axis=0), axis=1)
    assert np.allclose(steps, 0.1, atol=0.005)
    # it follows the road from the start line to the finish line
    dists = np.linalg.norm(traj.positions[:, None, [0, 2]] - track.centre[None, ::8], axis=2).min(axis=1)
    assert dists.max() < track.width / 2
    assert traj.length == pytest.approx(track.length, rel=0.05)
    assert np.linalg.norm(traj.positions[-1, [0, 2]] - track.centre[-1]) < 3.0

    # driving along the recorded trajectory is rewarded, about 1 per 10 m; driving back is not
    rf = RewardFunction(traj, min_steps=10_000)
    idx = np.arange(15, len(traj), 15)  # 1.5 m per step, like 30 m/s at 20 steps/s
    forward = [rf.step(traj.positions[i])[0] for i in idx[:200]]
    assert min(forward) > 0
    assert sum(forward) == pytest.approx(idx[199] * REWARD_PER_POINT, abs=0.05)
    backward = [rf.step(traj.positions[i] + 0.05)[0] for i in range(idx[199] - 5, idx[199] - 300, -5)]
    assert max(backward) < 0
    assert sum(backward) == pytest.approx(-(idx[199] - (idx[199] - 295)) * REWARD_PER_POINT, abs=0.05)


def test_recording_starts_again_after_a_respawn():
    from tmrl_trackmania.reward import record_trajectory
    from tmrl_trackmania.settings import SimSettings
    from tmrl_trackmania.sim.game import SimulatedGame
    from tmrl_trackmania.telemetry import TelemetryClient

    game = SimulatedGame(SimSettings(autopilot=True, time_scale=8.0)).start()
    respawned = []

    def respawn_once(record) -> None:
        if not respawned and record.distance > 40.0:  # 40 m into the drive, the driver starts over
            respawned.append(record.distance)
            game.respawn()

    try:
        with TelemetryClient("127.0.0.1", game.port, timeout=10) as client:
            traj = record_trajectory(client, spacing=0.1, timeout=60, on_record=respawn_once)
    finally:
        game.stop()
    assert respawned
    start = game.track.centre[0]
    assert np.linalg.norm(traj.positions[0, [0, 2]] - start) < 3.0
    assert traj.length == pytest.approx(game.track.length, rel=0.05)  # one drive, not 40 m more
