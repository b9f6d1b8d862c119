"""The simulated game's window reads a game pad too, as the game does: the Xbox 360 pad that
:class:`~tmrl_trackmania.control.GamepadController` creates through vgamepad (``trackmania.backend = "gamepad"``), or a
player's own pad of that kind.

On Linux, vgamepad makes a uinput device named ``Microsoft X-Box 360 pad``; the kernel shows it as
``/dev/input/eventN``. :class:`PadReader` finds it by name under ``/sys/class/input`` (it may appear after the
simulator starts, and go away when the worker stops), reads its raw ``input_event`` records, and keeps
:class:`PadState`: right trigger = gas, left trigger = brake, left stick x = steering, B = respawn, A = close the
finish screen (the mapping :class:`~tmrl_trackmania.control.GamepadController` drives). No extra dependency: an
``input_event`` is a fixed C struct, read with :mod:`struct`.
"""

from __future__ import annotations

import errno
import os
import select
import struct
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

#: the name vgamepad gives its Xbox 360 pad on Linux (``vgamepad/lin/virtual_gamepad.py``), as the xpad driver does
PAD_NAME = "Microsoft X-Box 360 pad"

# linux/input-event-codes.h
EV_KEY, EV_ABS = 0x01, 0x03
ABS_X, ABS_Z, ABS_RZ = 0x00, 0x02, 0x05
BTN_SOUTH, BTN_EAST = 0x130, 0x131  # A, B

#: ``struct input_event`` on a 64-bit kernel: ``struct timeval`` (two longs), ``__u16 type``, ``__u16 code``,
#: ``__s32 value``
EVENT = struct.Struct("llHHi")

#: the buttons the game reads from the pad, and what they do (the names :meth:`SimulatedGame.press` takes)
PAD_BUTTONS = {BTN_EAST: "respawn", BTN_SOUTH: "close_finish"}


def parse_events(data: bytes) -> Iterator[tuple[int, int, int]]:
    """``(type, code, value)`` of each whole ``input_event`` record in ``data`` (a trailing partial one is ignored)."""
    whole = len(data) - len(data) % EVENT.size
    for _, _, kind, code, value in EVENT.iter_unpack(data[:whole]):
        yield kind, code, value


class PadState:
    """The pad's triggers and stick from its events: triggers 0..255 (vgamepad's range), stick x -32768..32767."""

    def __init__(self) -> None:
        self.gas = 0.0
        self.brake = 0.0
        self.steer = 0.0

    def apply(self, kind: int, code: int, value: int) -> str | None:
        """Take one event; returns the game button it presses (``"respawn"``, ``"close_finish"``) or ``None``."""
        if kind == EV_ABS:
            if code == ABS_RZ:
                self.gas = min(max(value / 255.0, 0.0), 1.0)
            elif code == ABS_Z:
                self.brake = min(max(value / 255.0, 0.0), 1.0)
            elif code == ABS_X:
                self.steer = min(max(value / 32767.0, -1.0), 1.0)
        elif kind == EV_KEY and value == 1:
            return PAD_BUTTONS.get(code)
        return None

    def controls(self) -> tuple[float, float, float]:
        """``(gas, brake, steer)``."""
        return self.gas, self.brake, self.steer


SYSFS_INPUT, DEV_INPUT = Path("/sys/class/input"), Path("/dev/input")


def find_pad(name: str = PAD_NAME, sysfs: Path = SYSFS_INPUT, dev: Path = DEV_INPUT) -> Path | None:
    """The ``/dev/input/eventN`` of the first input device called ``name``, or ``None`` while there is none."""
    try:
        entries = sorted(sysfs.glob("event*"), key=lambda p: int(p.name[5:]) if p.name[5:].isdigit() else 0)
    except OSError:
        return None
    for entry in entries:
        try:
            if (entry / "device" / "name").read_text().strip() == name:
                return dev / entry.name
        except OSError:  # the device went away while we looked
            continue
    return None


class PadReader(threading.Thread):
    """Looks for the pad every ``rescan`` seconds, and while it is there, reads its events into :attr:`state`;
    ``on_button`` is called (on this thread) with each button press the game reads."""

    def __init__(
        self,
        on_button: Callable[[str], None] | None = None,
        *,
        name: str = PAD_NAME,
        sysfs: Path = SYSFS_INPUT,
        dev: Path = DEV_INPUT,
        rescan: float = 0.5,
    ) -> None:
        super().__init__(name="sim-pad", daemon=True)
        self.state = PadState()
        self.on_button = on_button
        self.pad_name, self.sysfs, self.dev, self.rescan = name, sysfs, dev, rescan
        self.device: Path | None = None  # the device being read, if any
        self._halt = threading.Event()
        self._warned: set[Path] = set()

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        while not self._halt.is_set():
            path = find_pad(self.pad_name, self.sysfs, self.dev)
            if path is None:
                self._halt.wait(self.rescan)
                continue
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            except OSError as exc:
                if path not in self._warned:  # once per device: this thread retries quietly
                    self._warned.add(path)
                    print(
                        f"simulator: cannot read the game pad {path} ({exc.strerror}); the window reads the keyboard"
                        " only. Allow your user to read it (the `input` group) to drive the simulator with a pad.",
                        file=sys.stderr,
                        flush=True,
                    )
                self._halt.wait(self.rescan)
                continue
            self.device = path
            try:
                self._read(fd)
            finally:
                os.close(fd)
                self.device = None
                self.state = PadState()  # a pad that went away holds nothing

    def _read(self, fd: int) -> None:
        pending = b""
        while not self._halt.is_set():
            ready, _, _ = select.select([fd], [], [], self.rescan)
            if not ready:
                continue
            try:
                data = os.read(fd, EVENT.size * 64)
            except BlockingIOError:
                continue
            except OSError as exc:
                if exc.errno in (errno.ENODEV, errno.EIO):  # the pad was removed
                    return
                raise
            if not data:
                return
            data = pending + data
            pending = data[len(data) - len(data) % EVENT.size :]  # a record split across reads: kept for the next
            for kind, code, value in parse_events(data):
                button = self.state.apply(kind, code, value)
                if button is not None and self.on_button is not None:
                    self.on_button(button)
