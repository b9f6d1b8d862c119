"""Hook implementations of tmrl-trackmania: three environments and the ``tmrl trackmania`` commands.

Each environment brings its encoder (a CNN for screenshots, an MLP for LIDAR readings), the core's ring memory and
history compressor (each screenshot or LIDAR reading and each action travels and is stored once), and its spaces.

Only specs live here (factories as ``"module:attr"`` strings), so listing plugins imports nothing heavy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tmrl_core import CommandSpec, EnvSpec, hookimpl

#: Core settings the TrackMania environments change by default (docs/trackmania.md, "Learning to drive").
#: The game runs at its own pace, so a trainer slower than it would otherwise fall behind without limit (the test
#: policy of a run with 600 training steps in 16,566 env steps never left the start line): with ``when_behind=wait``
#: the worker waits between episodes (the car stands at the start line) until the trainer has done one training
#: step per env step. A trainer doing 20 or more steps per second (any GPU) never makes it wait.
#: sac learns with learning rates of 3e-4 instead of its general 1e-3 (docs/trackmania.md, "Figures measured here"): on
#: the tight track two of three runs at 1e-3 saw their critics diverge (mean Q 1.4 to 216) and never finished a lap,
#: while at 3e-4 all three finished one within 50,000 env steps (25,009 to 39,722), and the default track's three
#: seeds finished theirs sooner (median 8,348 env steps against 11,730). Each agent's section applies only when that
#: agent runs. redqsac's are 3e-4 too (also the REDQ paper's): every redqsac run on TrackMania here used them.
#: redqsac's critics are layer-normalised (``critic_layer_norm``; docs/trackmania.md, "REDQ-SAC with layer-normalised
#: critics"): at 20 critic updates per env step, two of ten runs without it saw a critic diverge (mean Q up to 750,
#: where a lap is worth at most 137.5); with it, no mean Q went past 34 in twelve runs (both tracks, bonus 10 and 100).
TRACKMANIA_DEFAULT_SETTINGS: dict[str, Any] = {
    "training": {"when_behind": "wait", "max_training_steps_per_env_step": 1.0},
    "sac": {"lr_actor": 3e-4, "lr_critic": 3e-4},
    "redqsac": {"lr_actor": 3e-4, "lr_critic": 3e-4, "critic_layer_norm": True},
}
#: No warm-up of uniform random actions (``training.random_steps``): uniform gas, brake and steer at once leave the
#: car crawling near the start line, no more informative than the untrained policy's own noise, and the original
#: tmrl had none for TrackMania.
TRACKMANIA_RANDOM_STEPS = 0

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
                default_settings=TRACKMANIA_DEFAULT_SETTINGS,
                random_steps=TRACKMANIA_RANDOM_STEPS,
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
