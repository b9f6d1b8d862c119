"""The plugin's real lowest layer under a real X display (a private Xvfb): the simulated game runs in its own process
as a window titled like the game's, and the plugin's unmodified code finds and places it with xdotool, grabs it with
mss, computes the LIDAR on the captured pixels and drives the car with key presses through XTest."""

from __future__ import annotations

import time

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(__import__("sys").platform != "linux", reason="X11 runs on Linux")


@pytest.fixture
def on_display(simulator, monkeypatch):
    monkeypatch.setenv("DISPLAY", simulator.display)
    return simulator


def best_shift(captured: np.ndarray, rendered: np.ndarray, radius: int = 3) -> tuple[tuple[int, int], float]:
    """The (dy, dx) within ``radius`` that best aligns the capture with the rendered frame, and the mean absolute
    difference there (per channel, on the overlapping part)."""
    a, b = captured[..., :3].astype(np.int16), rendered[..., :3].astype(np.int16)
    h, w = a.shape[:2]
    scores = {}
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            sa = a[max(0, dy) : h + min(0, dy), max(0, dx) : w + min(0, dx)]
            sb = b[max(0, -dy) : h + min(0, -dy), max(0, -dx) : w + min(0, -dx)]
            scores[(dy, dx)] = float(np.abs(sa - sb).mean())
    shift = min(scores, key=scores.get)
    return shift, scores[shift]


def wait_for(predicate, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_the_window_is_found_placed_and_grabbed_as_rendered(on_display):
    from tmrl_trackmania.capture import WindowFrameSource, find_window

    before = find_window("Trackmania")
    assert (before.left, before.top, before.width, before.height) == (333, 222, 300, 200)
    frames = WindowFrameSource("Trackmania", 256, 128, place=True, x=40, y=30)
    try:
        after = find_window("Trackmania")
        assert (after.left, after.top, after.width, after.height) == (40, 30, 256, 128)
        assert frames.monitor == {"left": 40, "top": 30, "width": 256, "height": 128}
        # the game renders at its new size: wait until the window shows a frame of that size
        wait_for(lambda: on_display.shown_frame().shape[:2] == (128, 256), what="a resize")
        rendered = on_display.shown_frame()
        captured = frames.grab()
        assert captured.shape == (128, 256, 4) and captured.dtype == np.uint8
        shift, diff = best_shift(captured, rendered)
        assert shift == (0, 0) and diff < 1.0, (shift, diff)
        assert captured[..., :3].std() > 20  # road, walls, start line: not an empty grab
    finally:
        frames.close()


def test_a_misplaced_window_is_refused_with_a_hint(on_display):
    from tmrl_trackmania.capture import WindowError, WindowFrameSource

    with pytest.raises(WindowError) as err:
        WindowFrameSource("Trackmania", 256, 128, place=False)
    assert "300x200, not 256x128" in err.value.message and "place_window" in err.value.hint
    with pytest.raises(WindowError) as err:
        WindowFrameSource("No Such Game", 256, 128)
    assert "No Such Game" in err.value.message


def test_the_lidar_reads_the_captured_pixels_like_the_rendered_ones(on_display):
    from tmrl_trackmania.capture import WindowFrameSource
    from tmrl_trackmania.envs import _make_lidar
    from tmrl_trackmania.settings import TrackmaniaSettings

    frames = WindowFrameSource("Trackmania", 256, 128, x=0, y=0)
    try:
        wait_for(lambda: on_display.shown_frame().shape[:2] == (128, 256), what="a resize")
        lidar = _make_lidar(TrackmaniaSettings())
        captured, rendered = lidar.read(frames.grab()), lidar.read(on_display.shown_frame())
        np.testing.assert_allclose(captured, rendered, atol=1.0)
        # on the start straight, 16 m wide in a 40 m view: the side beams end at the walls, about 8 m away
        assert 40 < captured[0] < 60 and 40 < captured[-1] < 60
    finally:
        frames.close()


def test_key_presses_drive_the_car(on_display):
    from tmrl_trackmania.control import KeyboardController, _XTestKeys
    from tmrl_trackmania.telemetry import TelemetryClient

    keys = KeyboardController()
    assert isinstance(keys.keys, _XTestKeys)  # python-xlib is a Linux dependency of the plugin
    with TelemetryClient("127.0.0.1", on_display.port) as telemetry:
        assert telemetry.latest().speed == 0.0
        t0 = time.perf_counter()
        keys.apply(1.0, 0.0, 0.0)
        cost = time.perf_counter() - t0
        wait_for(lambda: telemetry.latest().speed > 30.0, what="30 km/h with the gas key held")
        assert cost < 0.02  # one step's key changes, in-process
        keys.apply(1.0, 0.0, 1.0)
        wait_for(lambda: telemetry.latest().steer == 1.0, what="steering right")
        keys.apply(0.0, 0.0, -1.0)  # gas released, steering left
        wait_for(lambda: telemetry.latest().gas == 0.0 and telemetry.latest().steer == -1.0, what="left, no gas")
        time.sleep(0.5)  # X repeats held keys as release/press pairs: the game still sees the key held
        assert telemetry.latest().steer == -1.0
        keys.apply(0.0, 1.0, 0.0)
        wait_for(lambda: telemetry.latest().brake == 1.0 and telemetry.latest().steer == 0.0, what="braking")
        keys.release()  # braking from a standstill reverses: release first, as the environments do
        keys.respawn()
        wait_for(lambda: telemetry.latest().distance == 0.0, what="a respawn (Delete)")
    keys.close()
    assert not any(keys._down.values())


def test_the_xdotool_keys_drive_the_car_too(on_display):
    from tmrl_trackmania.control import KeyboardController, _XdotoolKeys
    from tmrl_trackmania.telemetry import TelemetryClient

    keys = KeyboardController(_XdotoolKeys())
    with TelemetryClient("127.0.0.1", on_display.port) as telemetry:
        keys.apply(1.0, 0.0, -1.0)
        wait_for(lambda: telemetry.latest().speed > 10.0 and telemetry.latest().steer == -1.0, what="gas and left")
        keys.release()
        wait_for(lambda: telemetry.latest().gas == 0.0 and telemetry.latest().steer == 0.0, what="released")
    keys.close()


def test_grabbing_from_many_short_threads_keeps_one_connection_per_live_thread(on_display):
    """rtgym may capture each time step from a new thread: a grabber per thread must not outlive its thread (the X
    server refuses clients beyond 256, which ended a real run after about 250 steps)."""
    import threading

    from tmrl_trackmania.capture import WindowFrameSource

    frames = WindowFrameSource("Trackmania", 256, 128, x=0, y=0)
    try:
        for _ in range(300):
            t = threading.Thread(target=frames.grab)
            t.start()
            t.join()
        assert frames.open_grabbers <= 2
        assert frames.grab().shape == (128, 256, 4)
    finally:
        frames.close()
    assert frames.open_grabbers == 0


def test_held_keys_survive_autorepeat_and_commit_real_releases():
    """X repeats a held key as release/press pairs: a release counts only if no press of the key follows within the
    delay, or if another key is pressed (X repeats only the last key)."""
    from tmrl_trackmania.sim.window import HeldKeys

    pending = {}

    def schedule(ms, callback):
        pending[len(pending)] = callback
        return len(pending) - 1

    keys = HeldKeys(schedule, lambda handle: pending.pop(handle, None))
    keys.press("Up")
    keys.release("Up")
    keys.press("Up")  # the repeat: the pending release is cancelled
    assert keys.controls() == (1.0, 0.0, 0.0) and not pending
    keys.press("Left")
    keys.release("Left")
    assert keys.controls() == (1.0, 0.0, -1.0)  # not yet released
    for callback in list(pending.values()):
        callback()  # the delay passed without a press: a real release
    assert keys.controls() == (1.0, 0.0, 0.0)
    keys.press("Right")
    keys.release("Up")
    keys.press("Delete")  # another key: the pending release of Up is real at once
    assert keys.controls() == (0.0, 0.0, 1.0)
    keys.press("Left")
    assert keys.controls()[2] == 0.0  # both steering keys cancel out
