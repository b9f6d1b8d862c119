"""The data folder (``~/TmrlData`` by default, ``TMRL_HOME`` to move it).

Nothing here touches the disk at import time; folders are created when first asked for.
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "TMRL_HOME"
SUBFOLDERS = ("config", "checkpoints", "weights", "reward", "dataset", "runs")
CONFIG_FILE_NAME = "config.json"

__all__ = [
    "HOME_ENV",
    "SUBFOLDERS",
    "data_dir",
    "subdir",
    "config_file",
]


def data_dir(*, create: bool = False) -> Path:
    """The data folder: ``$TMRL_HOME`` if set, else ``~/TmrlData``."""
    raw = os.environ.get(HOME_ENV, "").strip()
    path = Path(raw).expanduser() if raw else Path.home() / "TmrlData"
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def subdir(name: str, *, create: bool = True) -> Path:
    """A subfolder of the data folder (``config``, ``checkpoints``, ``weights``, ...), created on demand."""
    path = data_dir() / name
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def config_file() -> Path:
    """Where the config file lives (it may not exist yet)."""
    return data_dir() / "config" / CONFIG_FILE_NAME


def install() -> Path:
    """Create the data folder and all its subfolders; return the data folder."""
    root = data_dir(create=True)
    for name in SUBFOLDERS:
        (root / name).mkdir(exist_ok=True)
    return root


def safe_name(name: str) -> str:
    """``name`` usable as a folder name (anything but letters, digits, ``-_.`` becomes ``_``)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "default"


def run_dir(run_name: str, *, create: bool = True) -> Path:
    """``<data>/runs/<run>/``, where a run's metrics, run information and local sockets live."""
    path = subdir("runs", create=create) / safe_name(run_name)
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path
