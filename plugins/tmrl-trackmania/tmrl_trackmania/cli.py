"""``tmrl trackmania ...``: install the OpenPlanet plugin, record a reward trajectory, check what the agent sees.

Heavy imports (numpy, OpenCV, the environments) happen inside the commands, so ``tmrl --help`` stays instant.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import typer

from tmrl_core.cli import set_option
from tmrl_core.errors import TmrlError

app = typer.Typer(
    help="TrackMania tools: install-plugin, record-reward, check-environment, simulator.",
    no_args_is_help=True,
)

#: TrackMania (2020) on Steam; its Proton prefix holds OpenPlanet's folder on Linux.
STEAM_APP_ID = 2225070
PLUGIN_NAME = "TMRL"


def plugin_source() -> Path:
    """The folder of the OpenPlanet plugin shipped with tmrl-trackmania."""
    return Path(__file__).parent / "openplanet" / PLUGIN_NAME


def openplanet_candidates(platform: str | None = None, home: Path | None = None) -> list[Path]:
    """Where OpenPlanet's ``Plugins`` folder usually is on this platform, most likely first."""
    platform = platform or sys.platform
    home = home or Path.home()
    if platform == "win32":
        return [home / "OpenplanetNext" / "Plugins"]
    prefix_user = Path("pfx") / "drive_c" / "users" / "steamuser" / "OpenplanetNext" / "Plugins"
    steam_roots = [
        home / ".local" / "share" / "Steam",
        home / ".steam" / "steam",
        home / ".var" / "app" / "com.valvesoftware.Steam" / ".local" / "share" / "Steam",
    ]
    return [root / "steamapps" / "compatdata" / str(STEAM_APP_ID) / prefix_user for root in steam_roots]


def default_openplanet_dir(platform: str | None = None, home: Path | None = None) -> Path:
    """OpenPlanet's ``Plugins`` folder, or a :class:`~tmrl_core.errors.TmrlError` saying where to look."""
    candidates = openplanet_candidates(platform, home)
    for path in candidates:
        if path.parent.is_dir():  # OpenplanetNext exists: OpenPlanet ran at least once
            return path
    listing = "\n  ".join(str(p) for p in candidates)
    raise TmrlError(
        "cannot find OpenPlanet's folder (OpenplanetNext) in the usual places:\n  " + listing,
        hint="install OpenPlanet (https://openplanet.dev) and start the game once, or give the folder with "
        "--openplanet-dir (on Linux it lies in the Wine/Proton prefix of the game, "
        "<prefix>/drive_c/users/<user>/OpenplanetNext/Plugins)",
    )


def _settings(sets: list[str] | None, **overrides: Any) -> Any:
    """The ``trackmania`` section of the effective settings, with ``overrides`` applied."""
    from tmrl_core.settings import load_settings
    from tmrl_trackmania.settings import TrackmaniaSettings, coerce_settings

    settings = load_settings(sets=sets or [])
    section = settings.section("trackmania", TrackmaniaSettings)
    return coerce_settings(section, **{k: v for k, v in overrides.items() if v is not None})


@app.command("install-plugin")
def install_plugin(
    openplanet_dir: Path | None = typer.Option(
        None, "--openplanet-dir", help="OpenPlanet's Plugins folder (default: found automatically)."
    ),
) -> None:
    """Copy the TMRL OpenPlanet plugin (it streams the car's telemetry to tmrl) into OpenPlanet's Plugins folder."""
    target_root = openplanet_dir.expanduser() if openplanet_dir is not None else default_openplanet_dir()
    target = target_root / PLUGIN_NAME
    target.mkdir(parents=True, exist_ok=True)
    copied = []
    for src in sorted(plugin_source().iterdir()):
        if src.is_file():
            shutil.copy2(src, target / src.name)
            copied.append(src.name)
    typer.echo(f"Installed the {PLUGIN_NAME} OpenPlanet plugin in {target} ({', '.join(copied)}).")
    typer.echo(
        "In the game: open the OpenPlanet overlay (F3), Developer > Load plugin > TMRL telemetry (unsigned plugins "
        "need OpenPlanet's developer signature mode). It listens on 127.0.0.1:9000 by default."
    )


@app.command("record-reward")
def record_reward(
    out: Path | None = typer.Option(None, "--out", "-o", help="Where to save the trajectory (.npz)."),
    timeout: float = typer.Option(600.0, help="Give up after this many seconds without crossing the finish line."),
    sets: list[str] = set_option(),
) -> None:
    """Record the reference trajectory of the reward: drive from the start line to the finish line.

    With the simulated game (trackmania.backend = simulated), the simulated car drives itself.
    """
    from tmrl_trackmania.envs import reward_file
    from tmrl_trackmania.reward import record_trajectory
    from tmrl_trackmania.sim.game import SimulatedGame
    from tmrl_trackmania.telemetry import TelemetryClient

    settings = _settings(sets)
    path = out or reward_file(settings)
    game = None
    if settings.backend == "simulated":
        sim = settings.sim.model_copy(update={"autopilot": True})
        game = SimulatedGame(sim, host=settings.telemetry_host, port=settings.effective_port()).start()
        port = game.port
        typer.echo(f"Simulated track {settings.sim.track!r}: the car drives itself to the finish line.")
    else:
        port = settings.effective_port()
        typer.echo(
            f"Connecting to the TMRL OpenPlanet plugin on {settings.telemetry_host}:{port}. Respawn, then drive from "
            "the start line to the finish line; recording starts on the start line and stops at the finish."
        )
    try:
        with TelemetryClient(settings.telemetry_host, port, timeout=settings.telemetry_timeout) as client:
            if game is not None:
                client.latest()
                game.respawn()
            trajectory = record_trajectory(
                client,
                spacing=settings.reward_spacing,
                timeout=timeout,
                on_start=lambda: typer.echo("Recording: the car is on the start line.") or sys.stdout.flush(),
            )
    finally:
        if game is not None:
            game.stop()
    trajectory.save(path)
    typer.echo(
        f"Saved {len(trajectory)} points ({trajectory.length:.1f} m, every {trajectory.spacing:g} m) to {path}"
    )


def _has_display() -> bool:
    if sys.platform in ("win32", "darwin"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def render_view(interface: Any, obs: Any, reward: float, scale: int = 3) -> Any:
    """What the agent sees, as a BGR image: the image history of ``obs`` side by side (full), or the window frame
    with the LIDAR beams drawn over it (lidar), with the reward and the speed written on it."""
    import cv2
    import numpy as np

    from tmrl_trackmania.envs import FullInterface

    history = obs[len(obs) - interface.settings.act_buf_len - 1]  # the element before rtgym's action buffer
    if isinstance(interface, FullInterface):
        rgb = history.ndim == 4
        tiles = [cv2.cvtColor(img, cv2.COLOR_RGB2BGR if rgb else cv2.COLOR_GRAY2BGR) for img in history]
        view = np.concatenate(tiles, axis=1)
    else:
        # the frame and the reading of one capture (the reading in obs may be one step older than the frame)
        frame, reading = interface.last_capture
        view = cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
        lidar = interface.lidar
        origin = tuple(int(round(v)) for v in lidar.origin)
        for end in lidar.end_points(reading):
            cv2.line(view, origin, (int(end[0]), int(end[1])), (255, 64, 0), 1)
    view = cv2.resize(view, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    text = f"reward {reward:+.2f}  speed {float(obs[0][0]):.0f} km/h"
    cv2.putText(view, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 255, 255), 1, cv2.LINE_AA)
    return view


@app.command("check-environment")
def check_environment(
    env: str = typer.Option("trackmania-lidar", "--env", help="trackmania-full, trackmania-lidar or -lidar-progress."),
    steps: int = typer.Option(0, help="Stop after this many steps (0: until Ctrl-C, or 200 with --out)."),
    out: Path | None = typer.Option(None, "--out", help="Save the frames as PNG files here instead of a window."),
    sets: list[str] = set_option(),
) -> None:
    """Show what the agent sees (the image history, or the LIDAR beams over the frame) and print the rewards.

    Drive yourself: no action is sent. With the simulated game, the simulated car drives itself.
    """
    from tmrl_trackmania.envs import INTERFACES, TrackmaniaEnv, rtgym_config

    if env not in INTERFACES:
        raise TmrlError(f"unknown TrackMania environment {env!r}", hint=f"choose one of {', '.join(INTERFACES)}")
    settings = _settings(sets)
    if settings.backend == "simulated":
        settings = settings.model_copy(update={"sim": settings.sim.model_copy(update={"autopilot": True})})
    if out is None and not _has_display():
        raise TmrlError("no display to show the frames on", hint="save them as PNG files instead: --out DIR")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        steps = steps or 200
    import cv2

    gym_env = TrackmaniaEnv(rtgym_config(INTERFACES[env], settings))
    interface = gym_env.tm_interface
    total = 0.0
    try:
        gym_env.reset()
        step = 0
        while steps == 0 or step < steps:
            obs, reward, terminated, truncated, _ = gym_env.step(None)
            step += 1
            total += reward
            end = "  (episode end)" if terminated or truncated else ""
            typer.echo(f"step {step:5d}  reward {reward:+.3f}  return {total:+.2f}{end}")
            view = render_view(interface, obs, reward)
            if out is not None:
                cv2.imwrite(str(out / f"step_{step:05d}.png"), view)
            else:
                try:
                    cv2.imshow("tmrl check-environment", view)
                    cv2.waitKey(1)
                except cv2.error as exc:
                    raise TmrlError(
                        f"OpenCV cannot open a window: {exc}",
                        hint="OpenCV may be the headless build; save the frames instead with --out DIR",
                    ) from exc
            if terminated or truncated:
                gym_env.reset()
                total = 0.0
    except KeyboardInterrupt:
        pass
    finally:
        gym_env.close()
        if out is None:
            try:
                cv2.destroyAllWindows()
            except cv2.error:
                pass
    if out is not None:
        typer.echo(f"Saved {step} frames to {out}")


@app.command("simulator")
def simulator(
    track: str = typer.Option("default", help="Simulated track: default, oval or tight."),
    port: int = typer.Option(9000, help="Telemetry port (the OpenPlanet plugin's is 9000; 0: a free one, printed)."),
    title: str = typer.Option("Trackmania", help="Window title."),
    size: str = typer.Option("256x128", help="Initial window size WIDTHxHEIGHT (tmrl resizes it as configured)."),
    at: str = typer.Option("0,0", help="Initial window position X,Y."),
    time_scale: float = typer.Option(1.0, help="Simulated seconds per wall-clock second."),
    dump: Path | None = typer.Option(None, help="On SIGUSR1, write the frame shown to this PNG."),
    gamepad: bool = typer.Option(True, help="Also read an Xbox 360 pad, e.g. trackmania.backend = gamepad's (Linux)."),
) -> None:
    """The simulated game in a window, driven by the arrow keys or an Xbox 360 pad: test the real capture and
    control stack without the game (trackmania.backend = keyboard or gamepad)."""
    from tmrl_trackmania.sim.track import LAYOUTS
    from tmrl_trackmania.sim.window import run_simulator

    if track not in LAYOUTS:
        raise TmrlError(f"unknown simulated track {track!r}", hint=f"choose one of {', '.join(LAYOUTS)}")
    try:
        width, height = (int(v) for v in size.lower().split("x"))
        x, y = (int(v) for v in at.split(","))
    except ValueError:
        raise TmrlError(f"cannot read --size {size!r} / --at {at!r}", hint="e.g. --size 256x128 --at 0,0") from None
    if not _has_display():
        raise TmrlError(
            "no display to open the simulator's window on",
            hint="run it on a desktop, or under a virtual X server: `Xvfb :99 &` then DISPLAY=:99",
        )
    try:
        import tkinter
    except ImportError as exc:
        raise TmrlError(f"the simulator's window needs Tk: {exc}", hint="e.g. `sudo apt install python3-tk`") from exc

    def announce(info: dict) -> None:

        typer.echo(json.dumps({**info, "pid": os.getpid()}))
        sys.stdout.flush()

    try:
        run_simulator(
            track=track, port=port, title=title, width=width, height=height, x=x, y=y, time_scale=time_scale,
            dump=dump, announce=announce, gamepad=gamepad,
        )
    except OSError as exc:
        raise TmrlError(f"the simulator cannot listen on port {port}: {exc}", hint="choose another --port") from exc
    except tkinter.TclError as exc:
        raise TmrlError(
            f"the simulator cannot open its window: {exc}", hint="check DISPLAY (e.g. start `Xvfb :99 &`, DISPLAY=:99)"
        ) from exc
