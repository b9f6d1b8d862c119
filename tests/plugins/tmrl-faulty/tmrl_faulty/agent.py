"""An agent whose train() raises: what a buggy third-party algorithm does."""

from __future__ import annotations

from typing import Any

from tmrl_sac import SacAgent


class BoomAgent(SacAgent):
    def train(self, batch: Any) -> dict[str, float]:
        raise RuntimeError("boom")
