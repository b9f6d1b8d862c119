"""Env specs' default settings as the pipeline applies them (the TrackMania plugin's; here rather than in the
plugin's tests because they go through ``tmrl_core.pipeline``, which is not plugin API)."""

from __future__ import annotations

import pytest

from tmrl_core.pipeline import prepare

pytest.importorskip("tmrl_trackmania")


@pytest.mark.parametrize("env", ["trackmania-full", "trackmania-lidar", "trackmania-lidar-progress"])
def test_training_waits_for_the_trainer_and_has_no_random_warm_up_by_default(tmrl_home, env):
    """A trainer slower than the game holds the worker between episodes at one training step per env step (else a
    slow trainer's test policy never leaves the start line), and the first actions are the policy's, not uniform
    random ones; a user's settings still win."""
    p = prepare(env, "sac")
    ts = p.settings.training
    assert (ts.when_behind, ts.max_training_steps_per_env_step, ts.random_steps) == ("wait", 1.0, 0)
    assert p.synchronous and p.steps_per_model == 1  # the worker waits for new weights after every episode
    assert p.settings.origin("training.when_behind") == f"defaults of env '{env}'"
    mine = prepare(env, "sac", sets=["training.when_behind=continue", "training.random_steps=50"])
    assert (mine.settings.training.when_behind, mine.settings.training.random_steps) == ("continue", 50)
    assert not mine.synchronous
