"""Settings that cannot work on this machine, refused before any process starts.

The settings models refuse what is wrong anywhere (a malformed device name, a negative seed, a batch larger than the
replay memory); :func:`check_pipeline` refuses what is wrong *here*: a device this machine does not have, and a
replay memory or a batch that cannot fit in its memory. Each error names the setting and where its value came from;
where memory is the reason, it gives the estimate.
"""

from __future__ import annotations

import math
import os
from collections.abc import Collection
from typing import TYPE_CHECKING

import numpy as np
from gymnasium import spaces

from tmrl_core.devices import check_device
from tmrl_core.errors import ConfigError
from tmrl_core.settings.provenance import describe_source

if TYPE_CHECKING:
    from tmrl_core.pipeline import Pipeline

#: reward, terminated, truncated (float32 each) and the episode-start flag, stored with every transition
_SCALAR_BYTES = 3 * 4 + 1


def available_memory() -> int | None:
    """Bytes of memory this machine can give now (``MemAvailable`` on Linux, else the physical memory; None if
    unknown)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return None


def _leaves(space: spaces.Space) -> list[spaces.Space]:
    if isinstance(space, spaces.Tuple):
        return [leaf for sub in space.spaces for leaf in _leaves(sub)]
    if isinstance(space, spaces.Dict):
        return [leaf for sub in space.spaces.values() for leaf in _leaves(sub)]
    return [space]


def _nbytes(space: spaces.Space) -> int:
    shape = space.shape or ()
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(space.dtype or np.float32).itemsize


def transition_bytes_lower_bound(
    observation_space: spaces.Space, action_space: spaces.Space, act_buf_len: int = 0
) -> int:
    """The fewest bytes any replay memory can store one transition in: the action, the scalars, and of each
    observation part one frame (a history of frames is stored once per frame; the action buffer at the end of an
    rtgym observation is rebuilt from the actions)."""
    parts = _leaves(observation_space)
    if act_buf_len:
        parts = parts[: len(parts) - act_buf_len]
    frames = 0
    for part in parts:
        shape = part.shape or ()
        frames += _nbytes(part) // shape[0] if len(shape) >= 2 and shape[0] else _nbytes(part)
    return frames + _nbytes(action_space) + _SCALAR_BYTES


def batch_bytes(observation_space: spaces.Space, action_space: spaces.Space, batch_size: int) -> int:
    """Bytes of one training batch: observation and next observation in full, action and scalars, as float32."""
    obs = sum(int(np.prod(part.shape or (), dtype=np.int64)) for part in _leaves(observation_space)) * 4
    act = int(np.prod(action_space.shape or (), dtype=np.int64)) * 4
    return batch_size * (2 * obs + act + _SCALAR_BYTES)


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB"


def check_pipeline(p: Pipeline, *, parts: Collection[str] = ("trainer", "worker")) -> None:
    """Refuse settings that cannot work for the ``parts`` that will run on this machine (``trainer``, ``worker``).

    Raises:
        ConfigError: naming the setting, its value and where it came from; with the memory estimate where memory is
            the reason.
    """
    s = p.settings

    def source(key: str) -> str:
        return describe_source(s.origin(key))

    if "worker" in parts:
        check_device("worker.device", s.worker.device, source("worker.device"))
    if "trainer" not in parts or p.agent is None:
        return
    check_device("training.device", s.training.device, source("training.device"))
    available = available_memory()
    if available is None:
        return
    t = s.training
    per_transition = transition_bytes_lower_bound(
        p.observation_space, p.action_space, int(p.component_options.get("act_buf_len", 0) or 0)
    )
    replay = t.memory_size * per_transition
    batch = batch_bytes(p.observation_space, p.action_space, t.batch_size)
    per_sample = math.ceil(batch / t.batch_size)
    if batch > available:
        raise ConfigError(
            f"training.batch_size={t.batch_size} (from {source('training.batch_size')}) needs about {_gb(batch)} for "
            f"one batch of env {p.env_name!r}, more than the {_gb(available)} of memory available on this machine",
            hint=f"lower training.batch_size: about {available // per_sample} fit",
        )
    if replay + batch > available:
        fits = max(0, available - batch) // per_transition
        with_batch = f" plus {_gb(batch)} for a batch" if batch >= 1e8 else ""
        raise ConfigError(
            f"training.memory_size={t.memory_size} (from {source('training.memory_size')}) needs at least "
            f"{_gb(replay)} for the replay memory ({per_transition} bytes per transition of env {p.env_name!r})"
            f"{with_batch}: more than the {_gb(available)} of memory available on this machine",
            hint=f"lower training.memory_size: about {fits} transitions fit",
        )
