"""Controls: how an action ``[gas, brake, steer]`` reaches the car.

- :class:`Controller` is the thin interface the environments use.
- :class:`GamepadController`: a virtual Xbox 360 pad (vgamepad): right trigger = gas, left trigger = brake, left
  stick x = steering; B respawns, A dismisses the finish screen. Needs the ViGEmBus driver on Windows, and libevdev
  plus write access to ``/dev/uinput`` on Linux.
- :class:`KeyboardController`: the fallback without a virtual pad: up/down/left/right arrow keys (an action above
  0.5 presses the key), Delete respawns (TrackMania's "give up"), Enter dismisses the finish screen. Windows:
  SendInput; Linux: xdotool.

vgamepad is imported only when a pad is created, so the rest of the plugin works where it cannot load.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from typing import Protocol, runtime_checkable

import numpy as np

from tmrl_core.errors import TmrlError


class ControlError(TmrlError):
    """The controls cannot be created or used."""


class GamepadUnavailableError(ControlError):
    """The virtual gamepad cannot be created on this machine."""


@runtime_checkable
class Controller(Protocol):
    """What the environments need from the controls."""

    def apply(self, gas: float, brake: float, steer: float) -> None:
        """Hold these inputs until the next call: gas and brake in [0, 1], steer in [-1, 1] (right positive)."""

    def release(self) -> None:
        """Release every input."""

    def respawn(self) -> None:
        """Back to the start of the track."""

    def close_finish_popup(self) -> None:
        """Dismiss what the game shows after the finish line."""

    def close(self) -> None: ...


def action_to_inputs(action: np.ndarray) -> tuple[float, float, float]:
    """``[gas, brake, steer]`` in [-1, 1] -> gas and brake pressures in [0, 1] (negative: released), steer."""
    gas, brake, steer = (float(v) for v in np.asarray(action, dtype=np.float64).reshape(3))
    return min(1.0, max(0.0, gas)), min(1.0, max(0.0, brake)), min(1.0, max(-1.0, steer))


# -- virtual gamepad ---------------------------------------------------------------------------------------------


def _gamepad_hint(platform: str) -> str:
    if platform == "win32":
        return (
            "install the ViGEmBus driver (https://github.com/nefarius/ViGEmBus/releases; `pip install vgamepad` "
            "offers it on Windows) and reboot, or use trackmania.backend = \"keyboard\""
        )
    return (
        "the virtual pad needs the libevdev library (e.g. `sudo apt install libevdev2`) and write access to "
        "/dev/uinput: load the module (`sudo modprobe uinput`) and allow your user, e.g. with the udev rule "
        "KERNEL==\"uinput\", MODE=\"0660\", GROUP=\"input\" and `sudo usermod -aG input $USER` (log in again); "
        "or use trackmania.backend = \"keyboard\""
    )


def create_virtual_pad(platform: str | None = None) -> object:
    """A vgamepad ``VX360Gamepad``, or :class:`GamepadUnavailableError` saying how to make one possible here."""
    platform = platform or sys.platform
    try:
        import vgamepad
    except ImportError as exc:
        raise GamepadUnavailableError(
            f"the virtual gamepad package is not installed ({exc})",
            hint="`pip install vgamepad`, or use trackmania.backend = \"keyboard\"",
        ) from exc
    except OSError as exc:  # vgamepad loads libevdev (Linux) or the ViGEm client (Windows) at import
        raise GamepadUnavailableError(
            f"the virtual gamepad cannot load its system library: {exc}", hint=_gamepad_hint(platform)
        ) from exc
    except Exception as exc:  # noqa: BLE001 - vgamepad raises bare exceptions when the Windows driver is missing
        raise GamepadUnavailableError(
            f"the virtual gamepad cannot start: {type(exc).__name__}: {exc}", hint=_gamepad_hint(platform)
        ) from exc
    try:
        return vgamepad.VX360Gamepad()
    except PermissionError as exc:
        raise GamepadUnavailableError(
            f"no permission to create a virtual gamepad: {exc}", hint=_gamepad_hint(platform)
        ) from exc
    except FileNotFoundError as exc:
        raise GamepadUnavailableError(
            f"cannot create a virtual gamepad: {exc} (is the uinput kernel module loaded?)", hint=_gamepad_hint(platform)
        ) from exc
    except Exception as exc:  # noqa: BLE001 - ViGEm errors surface as RuntimeError/AssertionError
        raise GamepadUnavailableError(
            f"cannot create a virtual gamepad: {type(exc).__name__}: {exc}", hint=_gamepad_hint(platform)
        ) from exc


class GamepadController:
    """A virtual Xbox 360 pad driving the game."""

    def __init__(self, pad: object | None = None, *, button_hold: float = 0.1) -> None:
        self.pad = pad if pad is not None else create_virtual_pad()
        self.button_hold = button_hold
        import vgamepad

        self._buttons = vgamepad.XUSB_BUTTON

    def apply(self, gas: float, brake: float, steer: float) -> None:
        pad = self.pad
        pad.right_trigger_float(value_float=gas)  # type: ignore[attr-defined]
        pad.left_trigger_float(value_float=brake)  # type: ignore[attr-defined]
        pad.left_joystick_float(x_value_float=steer, y_value_float=0.0)  # type: ignore[attr-defined]
        pad.update()  # type: ignore[attr-defined]

    def release(self) -> None:
        self.apply(0.0, 0.0, 0.0)

    def _tap(self, button: object) -> None:
        self.pad.press_button(button=button)  # type: ignore[attr-defined]
        self.pad.update()  # type: ignore[attr-defined]
        time.sleep(self.button_hold)  # the game polls the pad; a press shorter than a frame can be missed
        self.pad.release_button(button=button)  # type: ignore[attr-defined]
        self.pad.update()  # type: ignore[attr-defined]

    def respawn(self) -> None:
        self._tap(self._buttons.XUSB_GAMEPAD_B)

    def close_finish_popup(self) -> None:
        self._tap(self._buttons.XUSB_GAMEPAD_A)

    def close(self) -> None:
        try:
            self.release()
        except Exception:  # noqa: BLE001 - the pad may already be gone at interpreter exit
            pass


# -- keyboard ------------------------------------------------------------------------------------------------------

_KEYS = ("up", "down", "left", "right")


class _XdotoolKeys:
    """Key presses on X11 through xdotool (the focused window receives them)."""

    names = {"up": "Up", "down": "Down", "left": "Left", "right": "Right", "respawn": "Delete", "enter": "Return"}

    def __init__(self) -> None:
        exe = shutil.which("xdotool")
        if exe is None:
            raise ControlError(
                "the keyboard backend needs xdotool on Linux",
                hint="install it (e.g. `sudo apt install xdotool`), or use trackmania.backend = \"gamepad\"",
            )
        self.exe = exe

    def set(self, key: str, down: bool) -> None:
        subprocess.run([self.exe, "keydown" if down else "keyup", self.names[key]], check=False, timeout=2)


class _SendInputKeys:
    """Key presses on Windows through SendInput with scan codes (what DirectInput games read)."""

    # set-1 scan codes; the arrows and Delete are "extended" keys (an E0 prefix on the wire)
    scancodes = {"up": 0x48, "down": 0x50, "left": 0x4B, "right": 0x4D, "respawn": 0x53, "enter": 0x1C}
    extended = {"up", "down", "left", "right", "respawn"}

    def __init__(self) -> None:
        import ctypes
        from ctypes import wintypes

        class KEYBDINPUT(ctypes.Structure):
            _fields_ = [
                ("wVk", wintypes.WORD),
                ("wScan", wintypes.WORD),
                ("dwFlags", wintypes.DWORD),
                ("time", wintypes.DWORD),
                ("dwExtraInfo", ctypes.c_size_t),
            ]

        class MOUSEINPUT(ctypes.Structure):  # sizes the union like the real INPUT
            _fields_ = [
                ("dx", wintypes.LONG),
                ("dy", wintypes.LONG),
                ("mouseData", wintypes.DWORD),
                ("dwFlags", wintypes.DWORD),
                ("time", wintypes.DWORD),
                ("dwExtraInfo", ctypes.c_size_t),
            ]

        class _U(ctypes.Union):
            _fields_ = [("ki", KEYBDINPUT), ("mi", MOUSEINPUT)]

        class INPUT(ctypes.Structure):
            _fields_ = [("type", wintypes.DWORD), ("u", _U)]

        self.ctypes = ctypes
        self.INPUT = INPUT
        self.KEYBDINPUT = KEYBDINPUT
        self.user32 = ctypes.WinDLL("user32", use_last_error=True)

    def set(self, key: str, down: bool) -> None:
        keyeventf_extendedkey, keyeventf_keyup, keyeventf_scancode = 0x0001, 0x0002, 0x0008
        code = self.scancodes[key]
        flags = keyeventf_scancode | (0 if down else keyeventf_keyup)
        if key in self.extended:
            flags |= keyeventf_extendedkey
        inp = self.INPUT(type=1)
        inp.u.ki = self.KEYBDINPUT(0, code, flags, 0, 0)
        self.user32.SendInput(1, self.ctypes.byref(inp), self.ctypes.sizeof(inp))


class KeyboardController:
    """Drives with the arrow keys: binary inputs, so an action above 0.5 presses the key."""

    def __init__(self, keys: object | None = None, *, button_hold: float = 0.1) -> None:
        self.keys = keys if keys is not None else (_SendInputKeys() if sys.platform == "win32" else _XdotoolKeys())
        self.button_hold = button_hold
        self._down: dict[str, bool] = dict.fromkeys(_KEYS, False)

    def apply(self, gas: float, brake: float, steer: float) -> None:
        wanted = {"up": gas > 0.5, "down": brake > 0.5, "left": steer < -0.5, "right": steer > 0.5}
        for key, down in wanted.items():
            if self._down[key] != down:  # only changes are sent: each xdotool call is a process
                self.keys.set(key, down)  # type: ignore[attr-defined]
                self._down[key] = down

    def release(self) -> None:
        self.apply(0.0, 0.0, 0.0)

    def _tap(self, key: str) -> None:
        self.keys.set(key, True)  # type: ignore[attr-defined]
        time.sleep(self.button_hold)
        self.keys.set(key, False)  # type: ignore[attr-defined]

    def respawn(self) -> None:
        self._tap("respawn")

    def close_finish_popup(self) -> None:
        self._tap("enter")

    def close(self) -> None:
        try:
            self.release()
        except Exception:  # noqa: BLE001 - nothing to do if the keys cannot be released at exit
            pass
