"""The rtgym timing section shared by every real-time environment's settings (the core's RC drone, TrackMania).

Each knob's type, bounds and description are declared once here, as an annotated type, and the cross-field check
(the observation is captured within the time step) runs once, in :class:`RtgymTiming`. An environment's section
subclasses it and changes only the defaults it needs: ``start_obs_capture: StartObsCapture = 0.04``.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, model_validator

from tmrl_core.settings.models import Section

TimeStepDuration = Annotated[
    float, Field(gt=0.0, description="Target duration of an elastic time step, in s (RTGYM_CONFIG).")
]
StartObsCapture = Annotated[
    float,
    Field(ge=0.0, description="The observation is captured this long into a time step, in s (RTGYM_CONFIG)."),
]
# A factor of 0 would give every step a timeout of 0 s: every step a hair late would be counted as timed out and
# elastic stepping dropped, so the factor must be positive (rtgym accepts a fraction of a step).
TimeStepTimeoutFactor = Annotated[
    float,
    Field(
        gt=0.0,
        description="Allowed lateness of a step, in time steps (a fraction is fine), before rtgym counts a timeout "
        "(RTGYM_CONFIG).",
    ),
]
EpMaxLength = Annotated[int, Field(ge=1, description="rtgym truncates episodes after this many steps (RTGYM_CONFIG).")]
ActBufLen = Annotated[
    int, Field(ge=1, description="Past actions included in each observation, the action buffer (RTGYM_CONFIG).")
]
WaitOnDone = Annotated[bool, Field(description="Call the interface's wait() when an episode ends (RTGYM_CONFIG).")]
Benchmark = Annotated[
    bool, Field(description="Let rtgym measure its timings, see env.unwrapped.benchmarks() (RTGYM_CONFIG).")
]


class RtgymTiming(Section):
    """rtgym's timing knobs, with rtgym's defaults; validated together (the observation is captured in the step)."""

    time_step_duration: TimeStepDuration = 0.05
    start_obs_capture: StartObsCapture = 0.05
    time_step_timeout_factor: TimeStepTimeoutFactor = 1.0
    ep_max_length: EpMaxLength = 1000
    act_buf_len: ActBufLen = 1
    wait_on_done: WaitOnDone = False
    benchmark: Benchmark = False

    @model_validator(mode="after")
    def _capture_within_step(self) -> RtgymTiming:
        if self.start_obs_capture > self.time_step_duration:
            raise ValueError(
                f"start_obs_capture ({self.start_obs_capture}) must not exceed time_step_duration "
                f"({self.time_step_duration}): the observation is captured within the time step"
            )
        return self

    def rtgym_timing(self) -> dict[str, Any]:
        """These knobs as keys of rtgym's configuration dictionary."""
        return {name: getattr(self, name) for name in RtgymTiming.model_fields}
