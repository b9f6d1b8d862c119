"""Screen capture: where the game window is, grabbing it, and turning grabs into model inputs.

- :class:`FrameSource` is the thin interface the environments use: ``grab()`` returns the game window as a
  ``(height, width, 4)`` uint8 BGRA array (what screen grabbers return). The real one, :class:`WindowFrameSource`,
  grabs the window with mss; the simulated game provides another (:mod:`tmrl_trackmania.sim.backend`).
- :func:`find_window` / :func:`place_window` find the game window by title and move/resize it, with xdotool on Linux
  (X11, including the game under Proton/Wine) and the Win32 API on Windows.
- :class:`Preprocessor` resizes and converts frames with OpenCV for the ``trackmania-full`` image history.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from tmrl_core.errors import TmrlError


class WindowError(TmrlError):
    """The game window cannot be found, placed or captured."""


@runtime_checkable
class FrameSource(Protocol):
    """Where frames come from. ``grab()`` returns a ``(height, width, 4)`` uint8 BGRA frame of the game window."""

    width: int
    height: int

    def grab(self) -> np.ndarray: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class WindowGeometry:
    """A window's client area on screen, in pixels."""

    left: int
    top: int
    width: int
    height: int


# -- finding and placing the window -----------------------------------------------------------------------------


def _xdotool() -> str:
    exe = shutil.which("xdotool")
    if exe is None:
        raise WindowError(
            "xdotool is not installed: it is needed to find and place the TrackMania window on Linux",
            hint="install it (e.g. `sudo apt install xdotool`), or set trackmania.place_window = false and put the "
            "window at trackmania.window_x/window_y with the size trackmania.window_width x window_height yourself",
        )
    return exe


def parse_xdotool_geometry(text: str) -> WindowGeometry:
    """Parse ``xdotool getwindowgeometry --shell`` output (``X=..``, ``Y=..``, ``WIDTH=..``, ``HEIGHT=..``)."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() in {"X", "Y", "WIDTH", "HEIGHT"}:
            values[key.strip()] = int(value.strip())
    missing = {"X", "Y", "WIDTH", "HEIGHT"} - set(values)
    if missing:
        raise WindowError(f"cannot read the window geometry from xdotool (missing {', '.join(sorted(missing))})")
    return WindowGeometry(values["X"], values["Y"], values["WIDTH"], values["HEIGHT"])


def _x11_window_id(title: str) -> str:
    proc = subprocess.run(
        [_xdotool(), "search", "--onlyvisible", "--name", title], capture_output=True, text=True, check=False
    )
    ids = proc.stdout.split()
    if not ids:
        raise WindowError(
            f"no visible window whose title contains {title!r}",
            hint="start the game (windowed, not fullscreen) or set trackmania.window_title to its title",
        )
    return ids[0]


def outer_size_for_client(width: int, height: int, outer: WindowGeometry, client: WindowGeometry) -> tuple[int, int]:
    """The outer size to give a window (borders and title bar included) so that its client area, what is grabbed,
    becomes ``width x height``: the decorations keep their size."""
    return width + (outer.width - client.width), height + (outer.height - client.height)


def monitor_for(geometry: WindowGeometry, width: int, height: int) -> dict[str, int]:
    """The screen rectangle mss grabs for a window's client area, or a :class:`WindowError` when the window does not
    have the size the environment expects (a grab of another size would feed the model a cropped or padded view)."""
    if (geometry.width, geometry.height) != (width, height):
        raise WindowError(
            f"the game window's client area is {geometry.width}x{geometry.height}, not {width}x{height}",
            hint="let tmrl place it (trackmania.place_window = true), or resize it yourself; the game must be "
            "windowed, and its minimum window size must allow this size",
        )
    return {"left": geometry.left, "top": geometry.top, "width": width, "height": height}


def find_window(title: str) -> WindowGeometry:
    """The on-screen geometry of the window whose title contains ``title``."""
    if sys.platform == "win32":
        from tmrl_trackmania.win32 import Windows

        win = Windows()
        return win.client_geometry(win.find(title))
    wid = _x11_window_id(title)
    proc = subprocess.run(
        [_xdotool(), "getwindowgeometry", "--shell", wid], capture_output=True, text=True, check=False
    )
    return parse_xdotool_geometry(proc.stdout)


def place_window(title: str, x: int, y: int, width: int, height: int) -> WindowGeometry:
    """Move and resize the game window so its client area is ``width x height`` at ``(x, y)``; return where it is."""
    if sys.platform == "win32":
        from tmrl_trackmania.win32 import Windows

        win = Windows()
        hwnd = win.find(title)
        win.place(hwnd, x, y, width, height)
        return win.client_geometry(hwnd)
    wid = _x11_window_id(title)
    exe = _xdotool()
    subprocess.run([exe, "windowsize", "--sync", wid, str(width), str(height)], check=False, timeout=5)
    subprocess.run([exe, "windowmove", "--sync", wid, str(x), str(y)], check=False, timeout=5)
    return find_window(title)


# -- grabbing --------------------------------------------------------------------------------------------------


class WindowFrameSource:
    """Grabs the game window with mss.

    mss keeps per-thread handles on some platforms, and rtgym may capture from a new thread at every time step: each
    thread gets its own mss instance, created on first use, and the instances of threads that have ended are closed
    when a new one is made (without this, a run opens one X connection per step until the X server refuses more).
    """

    def __init__(
        self, title: str, width: int, height: int, *, place: bool = True, x: int = 0, y: int = 0
    ) -> None:
        self.title = title
        self.width = width
        self.height = height
        if place:
            geometry = place_window(title, x, y, width, height)
        else:
            geometry = find_window(title)
        self.monitor = monitor_for(geometry, width, height)
        self._lock = threading.Lock()
        self._by_thread: dict[threading.Thread, object] = {}

    @property
    def open_grabbers(self) -> int:
        """mss instances open now (one per live thread that grabbed)."""
        with self._lock:
            return len(self._by_thread)

    def _grabber(self) -> object:
        thread = threading.current_thread()
        with self._lock:
            sct = self._by_thread.get(thread)
            if sct is not None:
                return sct
            for dead in [t for t in self._by_thread if not t.is_alive()]:
                _close_grabber(self._by_thread.pop(dead))
            import mss

            # mss 10 renamed the factory (mss.mss is deprecated there); older versions only have mss.mss
            sct = getattr(mss, "MSS", mss.mss)()
            self._by_thread[thread] = sct
            return sct

    def grab(self) -> np.ndarray:
        return np.asarray(self._grabber().grab(self.monitor))  # type: ignore[attr-defined]

    def close(self) -> None:
        with self._lock:
            for sct in self._by_thread.values():
                _close_grabber(sct)
            self._by_thread.clear()


def _close_grabber(sct: object) -> None:
    try:
        sct.close()  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - closing a grabber of another thread may fail; nothing to do
        pass


# -- preprocessing ---------------------------------------------------------------------------------------------


class Preprocessor:
    """BGRA window frames -> model images: grayscale ``(height, width)`` or RGB ``(height, width, 3)``, resized to
    ``width x height`` with area interpolation, uint8."""

    def __init__(self, width: int, height: int, grayscale: bool = True) -> None:
        import cv2

        self._cv2 = cv2
        self.width = width
        self.height = height
        self.grayscale = grayscale
        self._code = cv2.COLOR_BGRA2GRAY if grayscale else cv2.COLOR_BGRA2RGB

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.height, self.width) if self.grayscale else (self.height, self.width, 3)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        cv2 = self._cv2
        # converting first is faster (measured in benchmarks/bench_trackmania.py): the resize, the costly part,
        # then averages one or three channels instead of four
        converted = cv2.cvtColor(frame, self._code)
        return cv2.resize(converted, (self.width, self.height), interpolation=cv2.INTER_AREA)
