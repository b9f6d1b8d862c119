"""Sample compressors (worker side) and the CRC check of rebuilt transitions (memory side)."""

from __future__ import annotations

from typing import Any


def no_compression(**_: Any) -> Any:
    """The identity compressor: samples travel as they are."""

    def compress(act: Any, obs: Any, rew: float, terminated: bool, truncated: bool, info: dict[str, Any]) -> Any:
        return act, obs, rew, terminated, truncated, info

    return compress
