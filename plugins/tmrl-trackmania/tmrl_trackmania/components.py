"""Keyword arguments the TrackMania environments give their compressor and memory (``EnvSpec.component_options``).

``act_buf_len``: the observation ends with rtgym's action buffer of that many actions. ``history_index``: the
top-level position of the history (screenshots or LIDAR readings, oldest first, padded at a reset with copies of the
first entry), so that each frame or reading travels and is stored once.
"""

from __future__ import annotations

from typing import Any

from tmrl_trackmania.settings import SettingsValues, coerce_settings


def full_options(settings: SettingsValues = None) -> dict[str, Any]:
    """``trackmania-full``: (speed, gear, rpm, images, *actions)."""
    return {"act_buf_len": coerce_settings(settings).act_buf_len, "history_index": 3}


def lidar_options(settings: SettingsValues = None) -> dict[str, Any]:
    """``trackmania-lidar``: (speed, lidar, *actions)."""
    return {"act_buf_len": coerce_settings(settings).act_buf_len, "history_index": 1}


def lidar_progress_options(settings: SettingsValues = None) -> dict[str, Any]:
    """``trackmania-lidar-progress``: (speed, progress, lidar, *actions)."""
    return {"act_buf_len": coerce_settings(settings).act_buf_len, "history_index": 2}
