"""The Windows side without Windows: the logic above the thin Win32 layer (window geometry, capture cropping, key
scan codes and flags) runs here; the layer itself is type-checked as Windows imports it by ``nox -s tests``
(mypy with the platform set to win32, see noxfile.py: a full mypy run is too slow for a test on a loaded machine)."""

from __future__ import annotations

import pytest
from tmrl_trackmania.capture import WindowError, WindowGeometry, monitor_for, outer_size_for_client
from tmrl_trackmania.control import SCANCODES, key_states, sendinput_key


def test_the_outer_size_keeps_the_decorations():
    # a window with 8 px borders and a 31 px title bar: its client area becomes 256 x 128
    outer, client = WindowGeometry(100, 100, 316, 239), WindowGeometry(108, 131, 300, 200)
    assert outer_size_for_client(256, 128, outer, client) == (272, 167)


def test_the_capture_is_the_client_area_of_the_right_size():
    assert monitor_for(WindowGeometry(8, 31, 256, 128), 256, 128) == {"left": 8, "top": 31, "width": 256, "height": 128}
    with pytest.raises(WindowError) as err:
        monitor_for(WindowGeometry(0, 0, 258, 128), 256, 128)
    assert "258x128, not 256x128" in err.value.message


def test_keys_map_to_scan_codes_and_flags():
    scancode, extended, keyup = 0x0008, 0x0001, 0x0002
    assert sendinput_key("up", True) == (0x48, scancode | extended)  # arrows are extended keys
    assert sendinput_key("up", False) == (0x48, scancode | extended | keyup)
    assert sendinput_key("enter", True) == (0x1C, scancode)  # the main Enter is not
    assert sendinput_key("respawn", False) == (0x53, scancode | extended | keyup)  # Delete
    assert set(SCANCODES) == {"up", "down", "left", "right", "respawn", "enter"}
    assert key_states(0.6, -1.0, -0.7) == {"up": True, "down": False, "left": True, "right": False}
    assert key_states(0.5, 0.51, 0.5) == {"up": False, "down": True, "left": False, "right": False}
