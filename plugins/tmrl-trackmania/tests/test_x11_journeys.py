"""The commands a Linux player types, run against the simulated game's real window on a private Xvfb, through the
plugin's unmodified keyboard backend: ``check-environment --out`` (its PNGs compared with what the simulator
rendered), ``record-reward`` while scripted key presses drive the track, and ``tmrl run`` on both environments."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="X11 runs on Linux")

SCALE = 3  # check-environment draws its views three times larger, nearest-neighbour
BEAM = (255, 64, 0)  # BGR of the LIDAR beams drawn by check-environment


def keyboard_sets(sim, reward_path) -> list[str]:
    sets = {
        "trackmania.backend": "keyboard",
        "trackmania.telemetry_port": sim.port,
        "trackmania.reward_path": reward_path,
        "trackmania.sleep_time_at_reset": 0.2,
    }
    return [arg for key, value in sets.items() for arg in ("--set", f"{key}={value}")]


def centre_line_reward(tmp_path):
    from tmrl_trackmania.reward import Trajectory
    from tmrl_trackmania.sim.track import build_track

    return Trajectory.from_path(build_track("default").positions3d()).save(tmp_path / "centre.npz")


def test_check_environment_pngs_show_what_the_simulator_rendered(simulator, run_tmrl, tmp_path):
    import cv2
    from tmrl_trackmania.capture import Preprocessor

    reward = centre_line_reward(tmp_path)
    for env in ("trackmania-lidar", "trackmania-full"):
        out = tmp_path / env
        result = run_tmrl(
            "trackmania", "check-environment", "--env", env, "--out", str(out), "--steps", "5",
            *keyboard_sets(simulator, reward), env=simulator.env(), timeout=120,
        )
        assert result.returncode == 0, str(result)
        assert "Saved 5 frames" in result.stdout
        rendered = simulator.shown_frame()  # nobody holds a key: the car stands on the start line, same frame
        assert rendered.shape == (128, 256, 4)  # placed and resized to the configured window
        view = cv2.imread(str(out / "step_00005.png"))
        if env == "trackmania-lidar":
            frame = view[SCALE // 2 :: SCALE, SCALE // 2 :: SCALE]  # one pixel per 3x3 block
            assert frame.shape[:2] == (128, 256)
            keep = ~np.all(frame == BEAM, axis=2)
            keep[:10] = False  # the caption
            expected = rendered[..., :3]
        else:
            first = view[:, : view.shape[0]]  # the oldest image of the history, at its left
            frame = first[SCALE // 2 :: SCALE, SCALE // 2 :: SCALE][..., :1]
            keep = np.ones(frame.shape[:2], dtype=bool)
            keep[:4] = False
            expected = Preprocessor(64, 64)(rendered)[..., None]
        assert keep.mean() > 0.8
        for dy, dx in [(0, 1), (1, 0), (0, -1), (-1, 0)]:  # a capture one pixel off would match worse
            shifted = np.roll(expected, (dy, dx), axis=(0, 1))
            assert np.abs(frame.astype(int) - shifted)[keep].mean() > np.abs(frame.astype(int) - expected)[keep].mean()
        diff = np.abs(frame.astype(int) - expected)[keep]
        assert diff.mean() < 2.0 and np.percentile(diff, 99) <= 8, (env, diff.mean())


class ScriptedDriver(threading.Thread):
    """Drives the simulated car around its track with arrow-key presses (XTest), like a player would: steer toward a
    point ahead on the centre line, gas below a speed that depends on the curvature ahead, brake above it."""

    def __init__(self, port: int, track: str = "default", top_speed: float = 16.0) -> None:
        super().__init__(daemon=True)
        from tmrl_trackmania.sim.track import build_track

        self.track = build_track(track)
        self.port = port
        self.top_speed = top_speed
        self.stop = threading.Event()
        self.finished = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._drive()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def _drive(self) -> None:
        import math

        from tmrl_trackmania.control import KeyboardController
        from tmrl_trackmania.telemetry import TelemetryClient

        keys = KeyboardController()
        track = self.track
        with TelemetryClient("127.0.0.1", self.port) as telemetry:
            telemetry.latest()
            keys.respawn()
            idx = 0
            heading = None
            last = None
            while not self.stop.is_set():
                rec = telemetry.wait_next(telemetry.seq)
                if rec.is_finished:
                    self.finished.set()
                    break
                pos = np.array([rec.x, rec.z])
                if last is not None and np.linalg.norm(pos - last) > 0.05:
                    heading = math.atan2(pos[1] - last[1], pos[0] - last[0])
                last = pos
                idx, _ = track.nearest(pos, idx)
                v = rec.speed / 3.6
                ahead = track.centre[min(len(track.centre) - 1, idx + int((7.0 + 0.5 * v) / 0.25))]
                steer = 0.0
                if heading is not None and v > 1.0:
                    bearing = math.atan2(ahead[1] - pos[1], ahead[0] - pos[0])
                    err = (bearing - heading + math.pi) % (2 * math.pi) - math.pi
                    steer = -1.0 if err > 0.06 else (1.0 if err < -0.06 else 0.0)
                kappa = track.curvature_ahead(idx, 12.0 + 1.5 * v)
                wanted = min(self.top_speed, math.sqrt(8.0 / max(kappa, 1e-4)))
                gas = 1.0 if v < wanted else 0.0
                brake = 1.0 if v > wanted + 3.0 else 0.0
                keys.apply(gas, brake, steer)
        keys.close()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_record_reward_from_key_presses_then_train_on_it(simulator, run_tmrl, tmrl_home, tmp_path, monkeypatch):
    """A player's journey: record the reference trajectory by driving (here, scripted key presses through XTest
    reach the window), then train with it."""
    from tmrl_trackmania.reward import Trajectory
    from tmrl_trackmania.sim.track import build_track

    from tmrl_core.testing import tmrl_command

    monkeypatch.setenv("DISPLAY", simulator.display)
    path = tmp_path / "recorded.npz"
    driver = ScriptedDriver(simulator.port)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TMRL_")}
    env.update(TMRL_HOME=str(tmrl_home), DISPLAY=simulator.display)
    record = subprocess.Popen(
        [*tmrl_command(), "trackmania", "record-reward", "--out", str(path), "--timeout", "120",
         "--set", "trackmania.backend=keyboard", "--set", f"trackmania.telemetry_port={simulator.port}"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    # record-reward records from the start line only (the fresh simulator's car stands there): then drive
    lines = []
    for line in record.stdout:
        lines.append(line)
        if line.startswith("Recording"):
            break
    driver.start()
    try:
        out, err = record.communicate(timeout=150)
        out = "".join(lines) + out
    finally:
        driver.stop.set()
        driver.join(10)
    assert driver.error is None, driver.error
    assert record.returncode == 0, out + err
    assert driver.finished.is_set()
    trajectory = Trajectory.load(path)
    track = build_track("default")
    # the recorded drive follows the track from the start line to the finish line, within the road
    assert abs(trajectory.length - track.length) < 0.1 * track.length
    dist = [abs(track.nearest(np.array([p[0], p[2]]))[1]) for p in trajectory.positions[::50]]
    assert max(dist) < track.width / 2

    result = run_tmrl(
        "run", "--env", "trackmania-lidar", "--algo", "sac", "--env-steps", "200", "--run-name", "recorded",
        *keyboard_sets(simulator, path),
        "--set", "trackmania.ep_max_length=100", "--set", "training.start_training=50",
        "--set", "training.batch_size=32", "--set", "training.steps_per_round=10",
        env={**simulator.env(), "PYTHONWARNINGS": "ignore"}, timeout=420,
    )
    assert result.returncode == 0, str(result)
    metrics = [json.loads(line) for line in (tmrl_home / "runs" / "recorded" / "metrics.jsonl").open()]
    assert max(m.get("training_steps", 0) for m in metrics) > 0
    assert any(m.get("return_train") is not None for m in metrics)


@pytest.mark.slow
@pytest.mark.timeout(480)
@pytest.mark.parametrize("env, algo", [("trackmania-lidar", "sac"), ("trackmania-full", "sac")])
def test_tmrl_run_through_the_real_capture_and_keyboard(simulator, run_tmrl, tmrl_home, tmp_path, env, algo):
    timing = tmp_path / "timing.jsonl"
    result = run_tmrl(
        "run", "--env", env, "--algo", algo, "--env-steps", "300", "--run-name", f"x11-{env}",
        *keyboard_sets(simulator, centre_line_reward(tmp_path)),
        "--set", "trackmania.ep_max_length=100", "--set", f"trackmania.timing_log={timing}",
        "--set", "training.start_training=100", "--set", "training.batch_size=32",
        "--set", "training.steps_per_round=10", "--set", "worker.test_episode_interval=1",
        env={**simulator.env(), "PYTHONWARNINGS": "ignore"}, timeout=420,
    )
    assert result.returncode == 0, str(result)
    entries = [json.loads(line) for line in timing.read_text().splitlines()]
    assert sum(e["steps"] for e in entries) >= 300
    metrics = [json.loads(line) for line in (tmrl_home / "runs" / f"x11-{env}" / "metrics.jsonl").open()]
    assert max(m.get("training_steps", 0) for m in metrics) > 0
    assert (tmrl_home / "weights" / f"x11-{env}.safetensors").is_file()
    # track progress is a metric of every episode, train and test
    for key in ("progress_train", "progress_test"):
        values = [m[key] for m in metrics if key in m]
        assert values and all(0.0 <= v <= 1.0 for v in values), key
