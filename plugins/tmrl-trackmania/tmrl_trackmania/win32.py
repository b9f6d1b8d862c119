"""Every Win32 call of the plugin, in one thin layer (ctypes, no pywin32): finding, measuring and moving the game
window, and pressing keys with SendInput.

Nothing here decides anything: which outer size gives the wanted client area (:func:`~tmrl_trackmania.capture.
outer_size_for_client`), which scan code and flags a key needs (:func:`~tmrl_trackmania.control.sendinput_key`) and
what part of the screen is grabbed (:func:`~tmrl_trackmania.capture.monitor_for`) are computed above this layer and
tested on Linux. This module cannot run there; it is type-checked for the win32 platform (``nox -s typecheck``, which
``.ci/run`` runs), so that a misspelt function, type or structure field fails the build.
"""

from __future__ import annotations

import ctypes
from ctypes import wintypes

from tmrl_trackmania.capture import WindowError, WindowGeometry, outer_size_for_client
from tmrl_trackmania.control import sendinput_key

#: SetWindowPos: keep the window's place in the stacking order
SWP_NOZORDER = 0x0004
INPUT_KEYBOARD = 1


class KEYBDINPUT(ctypes.Structure):
    _fields_ = [
        ("wVk", wintypes.WORD),
        ("wScan", wintypes.WORD),
        ("dwFlags", wintypes.DWORD),
        ("time", wintypes.DWORD),
        ("dwExtraInfo", ctypes.c_size_t),
    ]


class MOUSEINPUT(ctypes.Structure):  # only sizes the union like the real INPUT
    _fields_ = [
        ("dx", wintypes.LONG),
        ("dy", wintypes.LONG),
        ("mouseData", wintypes.DWORD),
        ("dwFlags", wintypes.DWORD),
        ("time", wintypes.DWORD),
        ("dwExtraInfo", ctypes.c_size_t),
    ]


class _INPUTUNION(ctypes.Union):
    _fields_ = [("ki", KEYBDINPUT), ("mi", MOUSEINPUT)]


class INPUT(ctypes.Structure):
    _fields_ = [("type", wintypes.DWORD), ("u", _INPUTUNION)]


WNDENUMPROC = ctypes.WINFUNCTYPE(wintypes.BOOL, wintypes.HWND, wintypes.LPARAM)


def _user32() -> ctypes.WinDLL:
    user32 = ctypes.WinDLL("user32", use_last_error=True)
    # window handles are pointer-sized: without argtypes ctypes would pass them as 32-bit ints
    hwnd, rect_p, point_p = wintypes.HWND, ctypes.POINTER(wintypes.RECT), ctypes.POINTER(wintypes.POINT)
    user32.EnumWindows.argtypes = [WNDENUMPROC, wintypes.LPARAM]
    user32.GetWindowTextLengthW.argtypes = [hwnd]
    user32.GetWindowTextW.argtypes = [hwnd, wintypes.LPWSTR, ctypes.c_int]
    user32.IsWindowVisible.argtypes = [hwnd]
    user32.GetClientRect.argtypes = [hwnd, rect_p]
    user32.GetWindowRect.argtypes = [hwnd, rect_p]
    user32.ClientToScreen.argtypes = [hwnd, point_p]
    user32.SetWindowPos.argtypes = [hwnd, hwnd, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, wintypes.UINT]
    user32.SendInput.argtypes = [wintypes.UINT, ctypes.POINTER(INPUT), ctypes.c_int]
    user32.SendInput.restype = wintypes.UINT
    return user32


class Windows:
    """Finding, measuring and moving a top-level window by title."""

    def __init__(self) -> None:
        self.user32 = _user32()
        try:  # real pixels on high-DPI screens, so the grab matches the window
            ctypes.WinDLL("shcore").SetProcessDpiAwareness(2)
        except (OSError, AttributeError):
            pass

    def find(self, title: str) -> int:
        found: list[int] = []

        def visit(hwnd: int, _: int) -> bool:
            length = self.user32.GetWindowTextLengthW(hwnd)
            if length and self.user32.IsWindowVisible(hwnd):
                buf = ctypes.create_unicode_buffer(length + 1)
                self.user32.GetWindowTextW(hwnd, buf, length + 1)
                if title.lower() in buf.value.lower():
                    found.append(hwnd)
                    return False
            return True

        self.user32.EnumWindows(WNDENUMPROC(visit), 0)
        if not found:
            raise WindowError(
                f"no visible window whose title contains {title!r}",
                hint="start the game (windowed, not fullscreen) or set trackmania.window_title to its title",
            )
        return found[0]

    def client_geometry(self, hwnd: int) -> WindowGeometry:
        rect = wintypes.RECT()
        self.user32.GetClientRect(hwnd, ctypes.byref(rect))
        point = wintypes.POINT(0, 0)
        self.user32.ClientToScreen(hwnd, ctypes.byref(point))
        return WindowGeometry(point.x, point.y, rect.right - rect.left, rect.bottom - rect.top)

    def outer_geometry(self, hwnd: int) -> WindowGeometry:
        rect = wintypes.RECT()
        self.user32.GetWindowRect(hwnd, ctypes.byref(rect))
        return WindowGeometry(rect.left, rect.top, rect.right - rect.left, rect.bottom - rect.top)

    def place(self, hwnd: int, x: int, y: int, width: int, height: int) -> None:
        outer_w, outer_h = outer_size_for_client(width, height, self.outer_geometry(hwnd), self.client_geometry(hwnd))
        if not self.user32.SetWindowPos(hwnd, None, x, y, outer_w, outer_h, SWP_NOZORDER):
            raise WindowError(f"could not move the game window (Win32 error {ctypes.get_last_error()})")


class SendInputKeys:
    """Key presses with SendInput and scan codes (what DirectInput games read)."""

    def __init__(self) -> None:
        self.user32 = _user32()

    def send(self, changes: list[tuple[str, bool]]) -> None:
        # one SendInput call for all the changes of a step, so the game sees them in the same frame
        inputs = (INPUT * len(changes))()
        for slot, (key, down) in zip(inputs, changes, strict=True):
            scan, flags = sendinput_key(key, down)
            slot.type = INPUT_KEYBOARD
            slot.u.ki = KEYBDINPUT(0, scan, flags, 0, 0)
        sent = self.user32.SendInput(len(changes), inputs, ctypes.sizeof(INPUT))
        if sent != len(changes):
            raise OSError(ctypes.get_last_error(), "SendInput was blocked (is another program's window elevated?)")
