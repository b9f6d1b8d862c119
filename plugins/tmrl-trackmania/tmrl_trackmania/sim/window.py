"""The simulated game as a real window: what the plugin's real lowest layer (xdotool, mss, XTest key presses) drives.

``tmrl trackmania simulator`` opens a window titled like the game's ("Trackmania") that shows the car's view of the
simulated track every frame, serves the OpenPlanet-format telemetry on TCP (port 9000 by default, like the TMRL
OpenPlanet plugin), and drives the car from the key events the window receives: the arrow keys (up: gas, down:
brake, left/right: steer), Delete (respawn), Enter (dismiss the finish screen). On Linux, under Xvfb or a desktop,
``trackmania.backend = "keyboard"`` then runs exactly the code paths it runs against the game: window discovery and
placement with xdotool, ``mss`` capture, the LIDAR on captured pixels, key presses through XTest. On Linux it also
reads an Xbox 360 pad, such as the virtual one of ``trackmania.backend = "gamepad"`` (:mod:`tmrl_trackmania.sim.pad`):
triggers, stick and buttons as the game reads them; held keys win over the pad.

Tk draws the window (it ships with Python; on Debian it is the ``python3-tk`` package): no extra dependency, and its
``PhotoImage`` takes a whole frame as one PPM buffer. The window's own size decides the rendered size, as in the game.

The process prints one JSON line on stdout once the window is shown (``{"port": ..., "title": ..., "pid": ...}``),
and on SIGUSR1 writes the frame it shows now to ``--dump`` (a PNG), so that tests compare captures with what was
rendered.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tmrl_trackmania.settings import SimSettings
from tmrl_trackmania.sim.game import SimulatedGame
from tmrl_trackmania.sim.pad import PadReader

#: X keysyms of the keys the simulated game reads (the ones :class:`~tmrl_trackmania.control.KeyboardController`
#: presses), and what they do.
HELD_KEYS = {"Up": "gas", "Down": "brake", "Left": "left", "Right": "right"}
BUTTON_KEYS = {"Delete": "respawn", "Return": "close_finish", "KP_Enter": "close_finish"}


class HeldKeys:
    """Which driving keys are held, from key press and release events.

    An X server repeats a held key as release/press pairs with no time between them; a release is therefore
    committed only if no press of the same key follows within ``delay_ms`` (through ``schedule(ms, callback)`` and
    ``cancel(handle)``, Tk's ``after`` and ``after_cancel``).
    """

    def __init__(
        self, schedule: Callable[[int, Callable[[], None]], Any], cancel: Callable[[Any], None], delay_ms: int = 30
    ) -> None:
        self._schedule = schedule
        self._cancel = cancel
        self.delay_ms = delay_ms
        self.held: set[str] = set()
        self._pending: dict[str, Any] = {}

    def press(self, keysym: str) -> None:
        # X repeats only the last key pressed: a press of another key makes the pending releases real ones
        for other in [k for k in self._pending if k != keysym]:
            self._cancel(self._pending.pop(other))
            self.held.discard(other)
        if keysym not in HELD_KEYS:
            return
        handle = self._pending.pop(keysym, None)
        if handle is not None:
            self._cancel(handle)
        self.held.add(keysym)

    def release(self, keysym: str) -> None:
        if keysym not in HELD_KEYS or keysym in self._pending:
            return

        def commit() -> None:
            self._pending.pop(keysym, None)
            self.held.discard(keysym)

        self._pending[keysym] = self._schedule(self.delay_ms, commit)

    def controls(self) -> tuple[float, float, float]:
        """``(gas, brake, steer)`` for the keys held now (both steering keys cancel out)."""
        held = {HELD_KEYS[k] for k in self.held}
        steer = float("right" in held) - float("left" in held)
        return float("gas" in held), float("brake" in held), steer


def bgra_to_ppm(frame: np.ndarray) -> bytes:
    """A ``(h, w, 4)`` BGRA frame as a binary PPM (what Tk's ``PhotoImage`` reads in one call)."""
    h, w = frame.shape[:2]
    rgb = np.ascontiguousarray(frame[:, :, 2::-1])
    return b"P6 %d %d 255 " % (w, h) + rgb.tobytes()


class SimulatorWindow:
    """A Tk window showing ``game`` and feeding it the keys it receives. :meth:`run` blocks until it is closed."""

    def __init__(
        self,
        game: SimulatedGame,
        *,
        title: str = "Trackmania",
        width: int = 256,
        height: int = 128,
        x: int = 0,
        y: int = 0,
        fps: float = 60.0,
        dump: Path | None = None,
        pad: PadReader | None = None,
    ) -> None:
        self.game = game
        self.pad = pad
        self.title = title
        self.size = (width, height)
        self.position = (x, y)
        self.period_ms = max(1, int(round(1000.0 / fps)))
        self.dump = dump
        self.shown: np.ndarray | None = None
        self._dump_requested = False
        self._root: Any = None

    def request_dump(self, *_: object) -> None:
        self._dump_requested = True  # written by the Tk loop: a signal handler must not touch Tk

    def close(self, *_: object) -> None:
        if self._root is not None:
            self._root.after(0, self._root.destroy)

    def run(self, on_ready: Callable[[], None] | None = None) -> None:
        import tkinter as tk

        root = tk.Tk()
        self._root = root
        root.title(self.title)
        width, height = self.size
        root.geometry(f"{width}x{height}+{self.position[0]}+{self.position[1]}")
        root.configure(borderwidth=0, highlightthickness=0)
        label = tk.Label(root, borderwidth=0, highlightthickness=0, padx=0, pady=0, background="black")
        label.pack(fill="both", expand=True)
        photo = tk.PhotoImage(width=width, height=height)
        label.configure(image=photo)
        keys = HeldKeys(root.after, root.after_cancel)

        def controls() -> tuple[float, float, float]:
            if self.pad is None or keys.held:
                return keys.controls()
            return self.pad.state.controls()

        def on_press(event: Any) -> None:
            keys.press(event.keysym)
            self.game.set_controls(*controls())
            button = BUTTON_KEYS.get(event.keysym)
            if button is not None:
                self.game.press(button)

        def on_release(event: Any) -> None:
            keys.release(event.keysym)
            self.game.set_controls(*controls())

        root.bind("<KeyPress>", on_press)
        root.bind("<KeyRelease>", on_release)
        root.protocol("WM_DELETE_WINDOW", root.destroy)

        def frame() -> None:
            # the game renders at its window's size: a placed or resized window shows the same view, rescaled
            w, h = max(8, root.winfo_width()), max(8, root.winfo_height())
            image = self.game.render(w, h)
            photo.configure(data=bgra_to_ppm(image), format="PPM", width=w, height=h)
            self.shown = image
            self.game.set_controls(*controls())  # commits delayed releases; reads the pad
            if self._dump_requested and self.dump is not None:
                self._dump_requested = False
                _write_png(self.dump, image)
            root.after(self.period_ms, frame)

        def ready() -> None:
            root.focus_force()  # the game has the keyboard focus, as when a player clicks into it
            if on_ready is not None:
                on_ready()

        root.after(0, frame)
        root.after(50, ready)
        root.mainloop()
        self._root = None


def _write_png(path: Path, image: np.ndarray) -> None:
    import cv2

    tmp = path.with_name(path.name + ".tmp.png")
    cv2.imwrite(str(tmp), image)
    tmp.replace(path)  # a reader never sees half a file


def run_simulator(
    *,
    track: str = "default",
    port: int = 9000,
    host: str = "127.0.0.1",
    title: str = "Trackmania",
    width: int = 256,
    height: int = 128,
    x: int = 0,
    y: int = 0,
    time_scale: float = 1.0,
    countdown: float = 0.0,
    dump: Path | None = None,
    announce: Callable[[dict[str, Any]], None] | None = None,
    gamepad: bool = True,
) -> None:
    """Start the simulated game with its window; returns when the window is closed (or on SIGTERM/SIGINT).
    ``gamepad``: also read an Xbox 360 pad (Linux; see :mod:`tmrl_trackmania.sim.pad`)."""
    game = SimulatedGame(SimSettings(track=track, time_scale=time_scale, countdown=countdown), host=host, port=port)
    game.start()
    pad = PadReader(game.press) if gamepad and sys.platform == "linux" else None
    if pad is not None:
        pad.start()
    window = SimulatorWindow(game, title=title, width=width, height=height, x=x, y=y, dump=dump, pad=pad)
    if hasattr(signal, "SIGUSR1"):
        signal.signal(signal.SIGUSR1, window.request_dump)
    signal.signal(signal.SIGTERM, window.close)
    signal.signal(signal.SIGINT, window.close)
    info = {"port": game.port, "title": title, "track": track}
    try:
        window.run(on_ready=(lambda: announce(info)) if announce is not None else None)
    finally:
        if pad is not None:
            pad.stop()
        game.stop()


def _announce_json(info: dict[str, Any]) -> None:
    print(json.dumps({**info, "pid": os.getpid()}), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The simulated TrackMania in a window (see the module docstring).")
    parser.add_argument("--track", default="default")
    parser.add_argument("--port", type=int, default=9000, help="telemetry port (0: a free one, printed)")
    parser.add_argument("--title", default="Trackmania")
    parser.add_argument("--size", default="256x128", help="initial window size WxH")
    parser.add_argument("--at", default="0,0", help="initial window position X,Y")
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--dump", type=Path, default=None, help="PNG written with the shown frame on SIGUSR1")
    parser.add_argument("--no-gamepad", action="store_true", help="read the keyboard only, not an Xbox 360 pad")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    x, y = (int(v) for v in args.at.split(","))
    if not math.isfinite(args.time_scale):
        parser.error("--time-scale must be finite")
    run_simulator(
        track=args.track, port=args.port, title=args.title, width=width, height=height, x=x, y=y,
        time_scale=args.time_scale, dump=args.dump, announce=_announce_json, gamepad=not args.no_gamepad,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
