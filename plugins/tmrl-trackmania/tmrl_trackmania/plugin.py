"""Hook implementations of tmrl-trackmania: three environments and the ``tmrl trackmania`` commands.

Each environment brings its encoder (a CNN for screenshots, an MLP for LIDAR readings), the core's ring memory and
history compressor (each screenshot or LIDAR reading and each action travels and is stored once), and its spaces.

Only specs live here (factories as ``"module:attr"`` strings), so listing plugins imports nothing heavy.
"""

from __future__ import annotations

from collections.abc import Callable

from tmrl_core import CommandSpec, EnvSpec, hookimpl

#: The three environments differ only in these: (name, suffix of their functions in envs.py and components.py,
#: observation encoder in models.py, description).
_ENVS = (
    (
        "trackmania-full",
        "full",
        "ImageHistoryEncoder",
        "TrackMania 2020: speed, gear, rpm and a history of screenshots; actions gas, brake, steer.",
    ),
    (
        "trackmania-lidar",
        "lidar",
        "LidarHistoryEncoder",
        "TrackMania 2020: speed and a history of 19-beam LIDAR readings from the screenshot.",
    ),
    (
        "trackmania-lidar-progress",
        "lidar_progress",
        "LidarHistoryEncoder",
        "TrackMania 2020: trackmania-lidar plus the progress along the track.",
    ),
)


@hookimpl
def tmrl_register_envs(register: Callable[[EnvSpec], None]) -> None:
    for name, suffix, encoder, description in _ENVS:
        register(
            EnvSpec(
                name=name,
                factory=f"tmrl_trackmania.envs:make_{suffix}",
                settings="tmrl_trackmania.settings:TrackmaniaSettings",
                settings_section="trackmania",
                realtime=True,
                memory="ring",
                compressor="history",
                encoder=f"tmrl_trackmania.models:{encoder}",
                spaces=f"tmrl_trackmania.envs:spaces_{suffix}",
                component_options=f"tmrl_trackmania.components:{suffix}_options",
                description=description,
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
