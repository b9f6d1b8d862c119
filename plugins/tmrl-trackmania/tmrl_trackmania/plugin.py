"""Hook implementations of tmrl-trackmania."""

from __future__ import annotations

from typing import Callable

from tmrl_core import CommandSpec, EnvSpec, hookimpl


@hookimpl
def tmrl_register_envs(register: Callable[[EnvSpec], None]) -> None:
    register(
        EnvSpec(
            name="trackmania-full",
            factory="tmrl_trackmania.envs:make_full",
            settings="tmrl_trackmania.settings:TrackmaniaSettings",
            settings_section="trackmania",
            realtime=True,
            description="TrackMania 2020: speed, gear, rpm and a history of screenshots; actions gas, brake, steer.",
        )
    )
    register(
        EnvSpec(
            name="trackmania-lidar",
            factory="tmrl_trackmania.envs:make_lidar",
            settings="tmrl_trackmania.settings:TrackmaniaSettings",
            settings_section="trackmania",
            realtime=True,
            description="TrackMania 2020: speed and a history of 19-beam LIDAR readings from the screenshot.",
        )
    )
    register(
        EnvSpec(
            name="trackmania-lidar-progress",
            factory="tmrl_trackmania.envs:make_lidar_progress",
            settings="tmrl_trackmania.settings:TrackmaniaSettings",
            settings_section="trackmania",
            realtime=True,
            description="TrackMania 2020: trackmania-lidar plus the progress along the track.",
        )
    )


@hookimpl
def tmrl_register_commands(register: Callable[[CommandSpec], None]) -> None:
    register(
        CommandSpec(
            name="trackmania",
            factory="tmrl_trackmania.cli:app",
            description="TrackMania tools: install-plugin, record-reward, check-environment.",
        )
    )
