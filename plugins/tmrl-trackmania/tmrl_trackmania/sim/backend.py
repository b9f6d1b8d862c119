"""The lowest layer for the simulated game: its screen as a :class:`~tmrl_trackmania.capture.FrameSource` and its
pad as a :class:`~tmrl_trackmania.control.Controller`. Everything above (telemetry client, preprocessing, LIDAR,
reward, rtgym interface) is the code the real game uses."""

from __future__ import annotations

import numpy as np

from tmrl_trackmania.sim.game import SimulatedGame


class SimulatedFrameSource:
    """Frames of the simulated game window (``(height, width, 4)`` BGRA, as mss returns them)."""

    def __init__(self, game: SimulatedGame, width: int, height: int) -> None:
        self.game = game
        self.width = width
        self.height = height

    def grab(self) -> np.ndarray:
        return self.game.render(self.width, self.height)

    def close(self) -> None:
        pass


class SimulatedController:
    """The simulated game's pad."""

    def __init__(self, game: SimulatedGame) -> None:
        self.game = game

    def apply(self, gas: float, brake: float, steer: float) -> None:
        self.game.set_controls(gas, brake, steer)

    def release(self) -> None:
        self.game.set_controls(0.0, 0.0, 0.0)

    def respawn(self) -> None:
        self.game.press("respawn")

    def close_finish_popup(self) -> None:
        self.game.press("close_finish")

    def close(self) -> None:
        self.release()
