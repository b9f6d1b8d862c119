"""The connection to the game: a frame source, a controller and a telemetry client, for the real game or the
simulated one. Only the two lowest layers (where pixels come from, where inputs go) differ between them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tmrl_trackmania.capture import FrameSource, WindowFrameSource
from tmrl_trackmania.control import Controller, GamepadController, KeyboardController
from tmrl_trackmania.settings import TrackmaniaSettings
from tmrl_trackmania.sim.backend import SimulatedController, SimulatedFrameSource
from tmrl_trackmania.sim.game import SimulatedGame
from tmrl_trackmania.telemetry import TelemetryClient


@dataclass
class GameLink:
    """What the environments hold on to while they run.

    Attributes:
        frames: the game window's frames.
        controller: the car's inputs.
        telemetry: the newest telemetry record, kept up to date in the background.
        sim: the simulated game when ``backend = "simulated"`` (started by :func:`open_game`, stopped by
            :meth:`close`), else None.
    """

    frames: FrameSource
    controller: Controller
    telemetry: TelemetryClient
    sim: Any = None
    _closed: bool = field(default=False, repr=False)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for part in (self.controller, self.frames, self.telemetry):
            try:
                part.close()
            except Exception:  # noqa: BLE001 - closing must go on for the other parts
                pass
        if self.sim is not None:
            self.sim.stop()


def open_game(settings: TrackmaniaSettings, *, connect: bool = True) -> GameLink:
    """Connect to the game (or start the simulated one) as ``settings.backend`` says."""
    sim = None
    if settings.backend == "simulated":
        sim = SimulatedGame(settings.sim, host=settings.telemetry_host, port=settings.effective_port()).start()
        frames: FrameSource = SimulatedFrameSource(sim, settings.window_width, settings.window_height)
        controller: Controller = SimulatedController(sim)
        port = sim.port
    else:
        port = settings.effective_port()
        if settings.backend == "gamepad":
            controller = GamepadController()
        else:
            controller = KeyboardController()
        try:
            frames = WindowFrameSource(
                settings.window_title,
                settings.window_width,
                settings.window_height,
                place=settings.place_window,
                x=settings.window_x,
                y=settings.window_y,
            )
        except BaseException:
            controller.close()
            raise
    telemetry = TelemetryClient(settings.telemetry_host, port, timeout=settings.telemetry_timeout)
    if connect:
        telemetry.start()
    return GameLink(frames=frames, controller=controller, telemetry=telemetry, sim=sim)
