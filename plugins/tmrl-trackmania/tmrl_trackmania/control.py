"""Controls: how an action ``[gas, brake, steer]`` reaches the car.

- :class:`Controller` is the thin interface the environments use.
- :class:`GamepadController`: a virtual Xbox 360 pad (vgamepad): right trigger = gas, left trigger = brake, left
  stick x = steering; B respawns, A dismisses the finish screen. Needs the ViGEmBus driver on Windows, and libevdev
  plus write access to ``/dev/uinput`` on Linux.
- :class:`KeyboardController`: the fallback without a virtual pad: up/down/left/right arrow keys (an action above
  0.5 presses the key), Delete respawns (TrackMania's "give up"), Enter dismisses the finish screen. Windows:
  SendInput (:mod:`tmrl_trackmania.win32`); Linux: XTest through python-xlib, or xdotool without it.

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
    except Exception as exc:  # vgamepad raises bare exceptions when the Windows driver is missing
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
            f"cannot create a virtual gamepad: {exc} (is the uinput kernel module loaded?)",
            hint=_gamepad_hint(platform),
        ) from exc
    except Exception as exc:  # ViGEm errors surface as RuntimeError/AssertionError
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


def key_states(gas: float, brake: float, steer: float) -> dict[str, bool]:
    """Which arrow keys an action holds: binary inputs, so a value beyond 0.5 presses the key."""
    return {"up": gas > 0.5, "down": brake > 0.5, "left": steer < -0.5, "right": steer > 0.5}


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

    def send(self, changes: list[tuple[str, bool]]) -> None:
        # one xdotool process for all the changes of a step: starting a process costs milliseconds
        args = [self.exe]
        for key, down in changes:
            args += ["keydown" if down else "keyup", self.names[key]]
        subprocess.run(args, check=False, timeout=2)


#: set-1 scan codes of the keys used; the arrows and Delete are "extended" keys (an E0 prefix on the wire)
SCANCODES = {"up": 0x48, "down": 0x50, "left": 0x4B, "right": 0x4D, "respawn": 0x53, "enter": 0x1C}
EXTENDED_KEYS = frozenset({"up", "down", "left", "right", "respawn"})
KEYEVENTF_EXTENDEDKEY, KEYEVENTF_KEYUP, KEYEVENTF_SCANCODE = 0x0001, 0x0002, 0x0008


def sendinput_key(key: str, down: bool) -> tuple[int, int]:
    """``(scan code, dwFlags)`` of a Win32 ``KEYBDINPUT`` pressing or releasing ``key`` (sent by
    :class:`tmrl_trackmania.win32.SendInputKeys`)."""
    flags = KEYEVENTF_SCANCODE | (0 if down else KEYEVENTF_KEYUP)
    if key in EXTENDED_KEYS:
        flags |= KEYEVENTF_EXTENDEDKEY
    return SCANCODES[key], flags


class _XTestKeys:
    """Key presses on X11 through the XTest extension, in-process with python-xlib (the focused window receives
    them, as with xdotool, but a step's changes cost microseconds instead of starting a process)."""

    names = _XdotoolKeys.names

    def __init__(self) -> None:
        from Xlib import XK, display
        from Xlib.error import DisplayError
        from Xlib.ext import xtest

        try:
            self.display = display.Display()
        except DisplayError as exc:
            raise ControlError(
                f"cannot open the X display for key presses: {exc}",
                hint="run where the game's window is shown (DISPLAY), or use trackmania.backend = \"gamepad\"",
            ) from exc
        if not self.display.has_extension("XTEST"):
            self.display.close()
            raise ControlError("the X server has no XTest extension", hint="use trackmania.backend = \"gamepad\"")
        self._xtest = xtest
        self._press, self._release = 2, 3  # X.KeyPress, X.KeyRelease
        to_code = self.display.keysym_to_keycode
        self.keycodes = {key: to_code(XK.string_to_keysym(name)) for key, name in self.names.items()}

    def send(self, changes: list[tuple[str, bool]]) -> None:
        for key, down in changes:
            self._xtest.fake_input(self.display, self._press if down else self._release, self.keycodes[key])
        self.display.sync()

    def close(self) -> None:
        self.display.close()


def _platform_keys() -> object:
    if sys.platform == "win32":
        from tmrl_trackmania.win32 import SendInputKeys

        return SendInputKeys()
    try:
        import Xlib  # noqa: F401 - python-xlib is optional: xdotool does the same, slower
    except ImportError:
        return _XdotoolKeys()
    return _XTestKeys()


class KeyboardController:
    """Drives with the arrow keys: binary inputs, so an action above 0.5 presses the key."""

    def __init__(self, keys: object | None = None, *, button_hold: float = 0.1) -> None:
        self.keys = keys if keys is not None else _platform_keys()
        self.button_hold = button_hold
        self._down: dict[str, bool] = dict.fromkeys(_KEYS, False)

    def apply(self, gas: float, brake: float, steer: float) -> None:
        changes = [(key, down) for key, down in key_states(gas, brake, steer).items() if self._down[key] != down]
        if changes:  # only changes are sent: each xdotool call is a process
            self.keys.send(changes)  # type: ignore[attr-defined]
            self._down.update(changes)

    def release(self) -> None:
        self.apply(0.0, 0.0, 0.0)

    def _tap(self, key: str) -> None:
        self.keys.send([(key, True)])  # type: ignore[attr-defined]
        time.sleep(self.button_hold)
        self.keys.send([(key, False)])  # type: ignore[attr-defined]

    def respawn(self) -> None:
        self._tap("respawn")

    def close_finish_popup(self) -> None:
        self._tap("enter")

    def close(self) -> None:
        try:
            self.release()
        except Exception:  # noqa: BLE001 - nothing to do if the keys cannot be released at exit
            pass
        close = getattr(self.keys, "close", None)
        if close is not None:
            close()
