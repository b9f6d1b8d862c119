"""The simulated game reads an Xbox 360 pad as the game does: raw ``input_event`` records from a device found by name.

Where ``/dev/uinput`` works, vgamepad's virtual pad (what ``trackmania.backend = "gamepad"`` drives) drives the
simulator's window under Xvfb. Everywhere, the reader runs on real files: a fake ``/sys/class/input`` tree and a
FIFO standing for ``/dev/input/eventN``, fed with the bytes the kernel would give.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
from tmrl_trackmania.sim.pad import (
    ABS_RZ,
    ABS_X,
    ABS_Z,
    BTN_EAST,
    BTN_SOUTH,
    EV_ABS,
    EV_KEY,
    EVENT,
    PAD_NAME,
    PadReader,
    PadState,
    find_pad,
    parse_events,
)

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="evdev devices are Linux's")

EV_SYN = 0x00


def event(kind: int, code: int, value: int) -> bytes:
    return EVENT.pack(1_700_000_000, 123, kind, code, value)


def fake_input_tree(root: Path, names: dict[str, str]) -> tuple[Path, Path]:
    sysfs, dev = root / "sys", root / "dev"
    dev.mkdir(parents=True)
    for entry, name in names.items():
        (sysfs / entry / "device").mkdir(parents=True)
        (sysfs / entry / "device" / "name").write_text(name + "\n")
    return sysfs, dev


def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_events_map_to_the_controls_the_gamepad_backend_sends():
    data = (
        event(EV_ABS, ABS_RZ, 255)  # right trigger fully pressed: gas
        + event(EV_ABS, ABS_Z, 51)  # left trigger a fifth: brake
        + event(EV_ABS, ABS_X, -32768)  # stick fully left
        + event(EV_SYN, 0, 0)
        + event(EV_KEY, BTN_EAST, 1)  # B pressed, then released
        + event(EV_KEY, BTN_EAST, 0)
        + event(EV_KEY, BTN_SOUTH, 1)
    )
    events = list(parse_events(data + b"\x01\x02"))  # a partial record at the end is not an event
    assert len(events) == 7 and events[0] == (EV_ABS, ABS_RZ, 255)
    state = PadState()
    buttons = [state.apply(*e) for e in events]
    assert buttons == [None, None, None, None, "respawn", None, "close_finish"]
    gas, brake, steer = state.controls()
    assert gas == 1.0 and brake == pytest.approx(0.2) and steer == -1.0
    state.apply(EV_ABS, ABS_X, 32767)
    assert state.steer == 1.0


def test_the_pad_is_found_by_its_name(tmp_path):
    sysfs, dev = fake_input_tree(tmp_path, {"event2": "AT Translated Set 2 keyboard", "event10": PAD_NAME})
    assert find_pad(PAD_NAME, sysfs, dev) == dev / "event10"
    assert find_pad("Another pad", sysfs, dev) is None
    assert find_pad(PAD_NAME, tmp_path / "missing", dev) is None


def test_the_reader_follows_a_pad_that_comes_and_goes(tmp_path):
    """The pad appears after the simulator started (the worker makes it), sends events in pieces, and goes away (the
    worker stopped): the reader finds it, reads it, lets go of its inputs, and finds the next one."""
    sysfs, dev = fake_input_tree(tmp_path, {"event3": "AT Translated Set 2 keyboard"})
    pressed: list[str] = []
    reader = PadReader(pressed.append, sysfs=sysfs, dev=dev, rescan=0.05)
    reader.start()
    try:
        time.sleep(0.2)
        assert reader.device is None  # no pad yet
        fifo = dev / "event7"
        os.mkfifo(fifo)
        (sysfs / "event7" / "device").mkdir(parents=True)
        (sysfs / "event7" / "device" / "name").write_text(PAD_NAME + "\n")
        writer = os.open(fifo, os.O_WRONLY)  # blocks until the reader has opened it
        assert wait_for(lambda: reader.device == fifo)
        data = event(EV_ABS, ABS_RZ, 255) + event(EV_ABS, ABS_X, 16384) + event(EV_KEY, BTN_EAST, 1)
        os.write(writer, data[:30])  # a record split across two reads
        time.sleep(0.1)
        os.write(writer, data[30:])
        assert wait_for(lambda: pressed == ["respawn"])
        gas, brake, steer = reader.state.controls()
        assert gas == 1.0 and brake == 0.0 and steer == pytest.approx(0.5, abs=1e-3)
        os.close(writer)  # the pad goes away: nothing stays held
        assert wait_for(lambda: reader.device is None or reader.state.controls() == (0.0, 0.0, 0.0))
        assert wait_for(lambda: reader.state.controls() == (0.0, 0.0, 0.0))
    finally:
        reader.stop()
        reader.join(timeout=5)
    assert not reader.is_alive()


def test_a_pad_button_reaches_the_simulated_game(tmp_path):
    from tmrl_trackmania.settings import SimSettings
    from tmrl_trackmania.sim.game import SimulatedGame

    sysfs, dev = fake_input_tree(tmp_path, {"event5": PAD_NAME})
    fifo = dev / "event5"
    os.mkfifo(fifo)
    game = SimulatedGame(SimSettings(time_scale=4.0)).start()
    reader = PadReader(game.press, sysfs=sysfs, dev=dev, rescan=0.05)
    reader.start()
    try:
        writer = os.open(fifo, os.O_WRONLY)
        os.write(writer, event(EV_KEY, BTN_EAST, 1) + event(EV_KEY, BTN_EAST, 0))
        assert wait_for(lambda: game.respawns == 1)
        os.close(writer)
    finally:
        reader.stop()
        reader.join(timeout=5)
        game.stop()


@pytest.fixture
def virtual_pad():
    """vgamepad's Xbox 360 pad through the plugin's controller; the test skips (before starting a simulator) where
    none can be made."""
    from tmrl_trackmania.control import GamepadController, GamepadUnavailableError

    try:
        pad = GamepadController()
    except GamepadUnavailableError as exc:
        pytest.skip(f"no virtual pad on this machine ({exc.message}); the error's hint is tested elsewhere")
    try:
        yield pad
    finally:
        pad.close()


def test_vgamepad_drives_the_simulator_window(virtual_pad, simulator):
    """Where uinput works: the pad that ``trackmania.backend = "gamepad"`` creates drives the window's car (gas,
    braking) and respawns it, read back from the game's telemetry."""
    from tmrl_trackmania.telemetry import TelemetryClient

    pad = virtual_pad
    with TelemetryClient("127.0.0.1", simulator.port) as telemetry:
        start = telemetry.latest()
        pad.apply(1.0, 0.0, 0.0)
        assert wait_for(lambda: telemetry.latest().speed > 20.0, timeout=15), "the pad's gas did not move the car"
        pad.apply(0.0, 1.0, 0.0)
        assert wait_for(lambda: telemetry.latest().speed < 5.0, timeout=15), "the pad's brake did not stop it"
        assert telemetry.latest().distance > start.distance + 5.0
        pad.respawn()
        assert wait_for(lambda: abs(telemetry.latest().distance - start.distance) < 1.0, timeout=5)
