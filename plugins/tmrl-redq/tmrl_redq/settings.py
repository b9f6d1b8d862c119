"""REDQ-SAC's hyperparameters (settings section ``redqsac``): SAC's plus N, M and G, in a module without torch (see
:mod:`tmrl_sac.settings`)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator
from tmrl_sac import SacSettings

__all__ = ["RedqSettings"]


class RedqSettings(SacSettings):
    """Hyperparameters of REDQ-SAC: SAC's, plus the ensemble's (the paper's N, M and G)."""

    n: int = Field(10, ge=2, description="N: critics in the ensemble (REDQ_N).")
    m: int = Field(
        2, ge=1, description="M: target critics drawn at random (distinct) for each target's minimum (REDQ_M)."
    )
    g: int = Field(20, ge=1, description="G: critic updates per actor update (the update-to-data ratio).")

    @model_validator(mode="before")
    @classmethod
    def _no_utd_ratio(cls, data: Any) -> Any:
        # utd_ratio was an agent attribute equal to g, never a setting; a config that names it means g
        if isinstance(data, dict) and "utd_ratio" in data:
            raise ValueError(
                "utd_ratio is not a REDQ setting: the update-to-data ratio is g (critic updates per actor update,"
                " also the train calls per training step); write g instead"
            )
        return data

    @model_validator(mode="after")
    def _m_at_most_n(self) -> RedqSettings:
        if self.m > self.n:
            raise ValueError(f"m ({self.m}) cannot exceed n ({self.n}): the target subset draws distinct critics")
        return self
