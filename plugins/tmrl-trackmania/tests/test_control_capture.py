"""Controls and window capture on this machine: what works without the game, and the errors a user sees when a
part is missing (virtual pad, xdotool), with how to fix it."""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest
from tmrl_trackmania.capture import Preprocessor, WindowError, find_window, parse_xdotool_geometry
from tmrl_trackmania.control import (
    ControlError,
    GamepadUnavailableError,
    KeyboardController,
    _XdotoolKeys,
    _XTestKeys,
    action_to_inputs,
    create_virtual_pad,
)


def test_actions_become_trigger_and_stick_values():
    assert action_to_inputs(np.array([0.5, -0.3, -1.7])) == (0.5, 0.0, -1.0)
    assert action_to_inputs(np.array([-1.0, 2.0, 0.25], dtype=np.float32)) == (0.0, 1.0, 0.25)


def _pad_or_error():
    try:
        return create_virtual_pad(), None
    except GamepadUnavailableError as exc:
        return None, exc


@pytest.mark.skipif(sys.platform == "win32", reason="the Linux messages are checked here")
def test_virtual_pad_failure_says_how_to_fix_it():
    pad, error = _pad_or_error()
    if pad is not None:
        pytest.skip("this machine can create a virtual pad (uinput is available), so there is no failure to check")
    hint = error.hint or ""
    # this box has neither libevdev nor /dev/uinput: the message must name both fixes and the fallback
    assert "libevdev" in hint and "/dev/uinput" in hint and "modprobe uinput" in hint
    assert 'backend = "keyboard"' in hint
    assert "virtual gamepad" in error.message


@pytest.mark.skipif(sys.platform == "win32", reason="Linux only")
def test_gamepad_env_fails_with_the_actionable_message(run_tmrl, tmp_path):
    """A user without a virtual pad gets one error with a hint, not a traceback."""
    from tmrl_trackmania.reward import Trajectory

    pad, _ = _pad_or_error()
    if pad is not None:
        pytest.skip("this machine can create a virtual pad")
    reward = Trajectory.from_path(np.array([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0]])).save(tmp_path / "reward.npz")
    result = run_tmrl(
        "trackmania", "check-environment", "--out", str(tmp_path / "frames"),
        "--set", "trackmania.backend=gamepad", "--set", f"trackmania.reward_path={reward}",
    )
    assert result.returncode != 0, str(result)
    assert "Error:" in result.stderr and "Hint:" in result.stderr and "uinput" in result.stderr, str(result)
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="Linux only")
def test_keyboard_and_window_need_xdotool_and_say_so(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # a machine without xdotool
    assert shutil.which("xdotool") is None
    with pytest.raises(ControlError) as err:
        KeyboardController(_XdotoolKeys())
    assert "xdotool" in err.value.message and "apt install xdotool" in err.value.hint
    with pytest.raises(WindowError) as err:
        find_window("Trackmania")
    assert "xdotool" in err.value.message and "place_window" in err.value.hint


@pytest.mark.skipif(sys.platform == "win32", reason="Linux only")
def test_keyboard_without_a_display_says_so(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    with pytest.raises(ControlError) as err:
        KeyboardController(_XTestKeys())
    assert "X display" in err.value.message and "DISPLAY" in err.value.hint


def test_xdotool_geometry_is_parsed():
    text = "WINDOW=4194311\nX=10\nY=42\nWIDTH=256\nHEIGHT=128\nSCREEN=0\n"
    geometry = parse_xdotool_geometry(text)
    assert (geometry.left, geometry.top, geometry.width, geometry.height) == (10, 42, 256, 128)
    with pytest.raises(WindowError, match="HEIGHT"):
        parse_xdotool_geometry("X=1\nY=2\nWIDTH=3\n")


def test_preprocessor_resizes_and_converts():
    frame = np.zeros((128, 256, 4), dtype=np.uint8)
    frame[:, :128] = (255, 0, 0, 255)  # left half blue (BGRA)
    frame[:, 128:] = (0, 0, 255, 255)  # right half red
    gray = Preprocessor(64, 32, grayscale=True)(frame)
    assert gray.shape == (32, 64) and gray.dtype == np.uint8 and Preprocessor(64, 32).shape == (32, 64)
    rgb = Preprocessor(64, 32, grayscale=False)(frame)
    assert rgb.shape == (32, 64, 3)
    np.testing.assert_array_equal(rgb[0, 0], [0, 0, 255])  # blue, now in RGB order
    np.testing.assert_array_equal(rgb[0, -1], [255, 0, 0])
    assert gray[0, 0] != gray[0, -1]
