"""Settings of the TrackMania environments: the ``trackmania`` section of the tmrl config.

Every knob of the original ``config.json`` "ENV" section has a field here (the original key is given in brackets in
each description), plus the control backend, the telemetry address and the simulated game's options.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from tmrl_core.settings import ActBufLen, RtgymTiming, Section, StartObsCapture, WaitOnDone, coerce_section

#: Port the TMRL OpenPlanet plugin listens on (and the default of ``telemetry_port`` for the real game).
DEFAULT_PLUGIN_PORT = 9000


class SimSettings(Section):
    """The simulated TrackMania used by ``backend = "simulated"`` (tests, benchmarks, trying the pipeline without
    the game)."""

    track: Literal["default", "tight", "oval"] = Field(
        "default",
        description="Track layout: 'default' (375 m, open, with a finish line), 'tight' (254 m of hairpins on a "
        "narrower road) or 'oval' (closed loop).",
    )
    time_scale: float = Field(
        1.0, gt=0.0, le=50.0, description="Simulated seconds per wall-clock second (>1 replays faster than real time)."
    )
    physics_hz: float = Field(
        100.0, ge=10.0, le=1000.0, description="Physics ticks (and telemetry records) per second."
    )
    view_width_m: float = Field(40.0, gt=1.0, description="Metres of road shown across the width of the game window.")
    countdown: float = Field(
        0.0, ge=0.0, description="Seconds the car stays frozen after a respawn (the green-light countdown)."
    )
    autopilot: bool = Field(
        False, description="The simulated car drives itself along the track and ignores the controls (record-reward)."
    )
    autopilot_speed: float = Field(25.0, gt=0.0, description="Top speed of the autopilot in m/s.")


class TrackmaniaSettings(RtgymTiming):
    """The ``trackmania`` section, shared by trackmania-full, trackmania-lidar and trackmania-lidar-progress."""

    # -- the game and how we talk to it ----------------------------------------------------------------------------
    backend: Literal["gamepad", "keyboard", "simulated"] = Field(
        "gamepad",
        description="How actions reach the car: a virtual Xbox pad (gamepad), key presses (keyboard), or the "
        "simulated game (VIRTUAL_GAMEPAD).",
    )
    window_title: str = Field("Trackmania", description="Title of the game window to capture and place.")
    window_width: int = Field(256, ge=32, description="The game window is resized to this width (WINDOW_WIDTH).")
    window_height: int = Field(128, ge=32, description="The game window is resized to this height (WINDOW_HEIGHT).")
    place_window: bool = Field(True, description="Move and resize the game window at start (X11 and Windows).")
    window_x: int = Field(0, description="Screen x of the game window's top-left corner when placing it.")
    window_y: int = Field(0, description="Screen y of the game window's top-left corner when placing it.")
    telemetry_host: str = Field("127.0.0.1", description="Address of the TMRL OpenPlanet plugin's telemetry server.")
    telemetry_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description=f"Telemetry port; None: {DEFAULT_PLUGIN_PORT} (the plugin's) for the game, a free port for the "
        "simulator.",
    )
    telemetry_timeout: float = Field(
        10.0, gt=0.0, description="Seconds without telemetry before the env stops with an error saying why."
    )

    # -- observations ---------------------------------------------------------------------------------------------
    img_width: int = Field(64, ge=8, description="Screenshots fed to the model are resized to this width (IMG_WIDTH).")
    img_height: int = Field(64, ge=8, description="... and to this height (IMG_HEIGHT).")
    grayscale: bool = Field(True, description="Grayscale screenshots, else RGB (IMG_GRAYSCALE).")
    history_length: int = Field(4, ge=1, description="Screenshots or LIDAR readings in the history (IMG_HIST_LEN).")
    lidar_black_threshold: int = Field(
        55, ge=1, le=255, description="A LIDAR beam stops at the first pixel whose channels are all below this value."
    )
    lidar_origin: float = Field(
        0.98, gt=0.0, le=1.0, description="Height of the LIDAR origin in the window, as a fraction from the top."
    )

    # -- rtgym timing ---------------------------------------------------------------------------------------------
    # time_step_duration, time_step_timeout_factor, ep_max_length and benchmark keep RtgymTiming's defaults
    start_obs_capture: StartObsCapture = 0.04
    act_buf_len: ActBufLen = 2
    # Pause between episodes: release the controls and dismiss the finish screen.
    wait_on_done: WaitOnDone = True
    sleep_time_at_reset: float = Field(
        1.5, ge=0.0, description="Seconds to wait after a respawn, for the green light (SLEEP_TIME_AT_RESET)."
    )
    timing_log: Path | None = Field(
        None, description="Append per-episode timing statistics (steps, timed-out steps) to this file as JSON lines."
    )

    # -- reward ---------------------------------------------------------------------------------------------------
    reward_path: Path | None = Field(
        None,
        description="Reference trajectory (.npz); None: <data>/reward/trackmania.npz, or the simulated track's "
        "own file.",
    )
    reward_spacing: float = Field(
        0.1, gt=0.0, description="Metres between consecutive points of a recorded trajectory (record-reward)."
    )
    end_of_track: float = Field(100.0, description="Bonus when crossing the finish line (END_OF_TRACK).")
    constant_penalty: float = Field(0.0, description="Added to the reward at every step (CONSTANT_PENALTY).")
    check_forward: int = Field(
        500, ge=1, description="Trajectory points searched ahead; more allows longer cuts (CHECK_FORWARD)."
    )
    check_backward: int = Field(10, ge=1, description="Trajectory points searched behind (CHECK_BACKWARD).")
    failure_countdown: int = Field(
        10, ge=1, description="Steps in a row without progress that end the episode (FAILURE_COUNTDOWN)."
    )
    min_steps: int = Field(
        70, ge=0, description="Steps at the start of an episode before it can end for lack of progress (MIN_STEPS)."
    )
    max_stray: float = Field(
        100.0, gt=0.0, description="Metres from the trajectory beyond which the episode ends (MAX_STRAY)."
    )

    sim: SimSettings = Field(default_factory=SimSettings, description="The simulated game (backend = 'simulated').")

    @classmethod
    def migrate_original(cls, original: dict[str, Any]) -> dict[str, Any]:
        """This section's values from an original tmrl ``config.json`` (used by ``tmrl config migrate``)."""
        env = original.get("ENV") or {}
        rtgym = env.get("RTGYM_CONFIG") or {}
        reward = {**env, **(env.get("REWARD_CONFIG") or {})}  # REWARD_CONFIG keys, also accepted directly in ENV
        out: dict[str, Any] = {}
        for key, name in _ORIGINAL_ENV_KEYS.items():
            if key in env:
                out[name] = env[key]
        for name in _ORIGINAL_RTGYM_KEYS:
            if name in rtgym:
                out[name] = rtgym[name]
        for key, name in _ORIGINAL_REWARD_KEYS.items():
            if key in reward:
                out[name] = reward[key]
        if "VIRTUAL_GAMEPAD" in original:
            out["backend"] = "gamepad" if original["VIRTUAL_GAMEPAD"] else "keyboard"
        return out

    def effective_port(self) -> int:
        """The telemetry port to connect to (0 means: let the simulator pick a free one)."""
        if self.telemetry_port is not None:
            return self.telemetry_port
        return 0 if self.backend == "simulated" else DEFAULT_PLUGIN_PORT


_ORIGINAL_ENV_KEYS = {
    "WINDOW_WIDTH": "window_width",
    "WINDOW_HEIGHT": "window_height",
    "IMG_WIDTH": "img_width",
    "IMG_HEIGHT": "img_height",
    "IMG_GRAYSCALE": "grayscale",
    "SLEEP_TIME_AT_RESET": "sleep_time_at_reset",
    "IMG_HIST_LEN": "history_length",
}
_ORIGINAL_RTGYM_KEYS = (
    "time_step_duration",
    "start_obs_capture",
    "time_step_timeout_factor",
    "act_buf_len",
    "benchmark",
    "wait_on_done",
    "ep_max_length",
)
_ORIGINAL_REWARD_KEYS = {
    "END_OF_TRACK": "end_of_track",
    "CONSTANT_PENALTY": "constant_penalty",
    "CHECK_FORWARD": "check_forward",
    "CHECK_BACKWARD": "check_backward",
    "FAILURE_COUNTDOWN": "failure_countdown",
    "MIN_STEPS": "min_steps",
    "MAX_STRAY": "max_stray",
}


#: what the env factories and component options accept as settings: the validated section, a raw dict, or None
SettingsValues = TrackmaniaSettings | Mapping[str, Any] | None


def coerce_settings(settings: SettingsValues = None, **overrides: Any) -> TrackmaniaSettings:
    """Settings from a validated section, a raw dict, or None (defaults), with keyword overrides applied."""
    return coerce_section(settings, TrackmaniaSettings, section="trackmania", **overrides)
