"""An agent whose train() raises, and an actor that cannot be built: what buggy third-party algorithms do."""

from __future__ import annotations

from typing import Any

from tmrl_sac import SacActor, SacAgent


class BoomAgent(SacAgent):
    def train(self, batch: Any) -> dict[str, float]:
        raise RuntimeError("boom")


class BoomActor(SacActor):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the boom actor cannot be built")
