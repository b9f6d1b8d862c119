"""Hook implementations of tmrl-trackmania: three environments and the ``tmrl trackmania`` commands.

Each environment brings its encoder (a CNN for screenshots, an MLP for LIDAR readings), the core's ring memory and
history compressor (each screenshot or LIDAR reading and each action travels and is stored once), and its spaces.

Only specs live here (factories as ``"module:attr"`` strings), so listing plugins imports nothing heavy.
"""

from __future__ import annotations

from collections.abc import Callable

from tmrl_core import CommandSpec, EnvSpec, hookimpl

_SETTINGS = "tmrl_trackmania.settings:TrackmaniaSettings"


@hookimpl
def tmrl_register_envs(register: Callable[[EnvSpec], None]) -> None:
    register(
        EnvSpec(
            name="trackmania-full",
            factory="tmrl_trackmania.envs:make_full",
            settings=_SETTINGS,
            settings_section="trackmania",
            realtime=True,
            memory="ring",
            compressor="history",
            encoder="tmrl_trackmania.models:ImageHistoryEncoder",
            spaces="tmrl_trackmania.envs:spaces_full",
            component_options="tmrl_trackmania.components:full_options",
            description="TrackMania 2020: speed, gear, rpm and a history of screenshots; actions gas, brake, steer.",
        )
    )
    register(
        EnvSpec(
            name="trackmania-lidar",
            factory="tmrl_trackmania.envs:make_lidar",
            settings=_SETTINGS,
            settings_section="trackmania",
            realtime=True,
            memory="ring",
            compressor="history",
            encoder="tmrl_trackmania.models:LidarHistoryEncoder",
            spaces="tmrl_trackmania.envs:spaces_lidar",
            component_options="tmrl_trackmania.components:lidar_options",
            description="TrackMania 2020: speed and a history of 19-beam LIDAR readings from the screenshot.",
        )
    )
    register(
        EnvSpec(
            name="trackmania-lidar-progress",
            factory="tmrl_trackmania.envs:make_lidar_progress",
            settings=_SETTINGS,
            settings_section="trackmania",
            realtime=True,
            memory="ring",
            compressor="history",
            encoder="tmrl_trackmania.models:LidarHistoryEncoder",
            spaces="tmrl_trackmania.envs:spaces_lidar_progress",
            component_options="tmrl_trackmania.components:lidar_progress_options",
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
