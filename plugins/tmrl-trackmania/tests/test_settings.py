"""The ``trackmania`` settings section: validation, the layered sources, and migrating an original config.json."""

from __future__ import annotations

import pytest
from tmrl_trackmania.settings import DEFAULT_PLUGIN_PORT, TrackmaniaSettings

from tmrl_core.errors import ConfigError
from tmrl_core.settings import load_settings


def test_defaults_are_the_originals():
    s = TrackmaniaSettings()
    assert (s.window_width, s.window_height, s.img_width, s.img_height, s.history_length) == (256, 128, 64, 64, 4)
    assert (s.time_step_duration, s.start_obs_capture, s.act_buf_len, s.ep_max_length) == (0.05, 0.04, 2, 1000)
    reward = (s.end_of_track, s.check_forward, s.check_backward, s.failure_countdown, s.min_steps)
    assert reward == (100, 500, 10, 10, 70)
    assert s.effective_port() == DEFAULT_PLUGIN_PORT == 9000
    assert TrackmaniaSettings(backend="simulated").effective_port() == 0  # a free port for each simulator
    for name, field in TrackmaniaSettings.model_fields.items():
        assert field.description, f"{name} has no description"


def test_section_is_validated_from_every_source(tmrl_home):
    settings = load_settings(
        sets=["trackmania.backend=simulated", "trackmania.sim.time_scale=4"],
        environ={"TMRL_TRACKMANIA__HISTORY_LENGTH": "3"},
    )
    s = settings.section("trackmania", TrackmaniaSettings)
    assert s.backend == "simulated" and s.sim.time_scale == 4.0 and s.history_length == 3
    with pytest.raises(ConfigError, match="trackmania.no_such_key"):
        load_settings(sets=["trackmania.no_such_key=1"]).section("trackmania", TrackmaniaSettings)
    with pytest.raises(ConfigError, match="start_obs_capture"):
        load_settings(sets=["trackmania.start_obs_capture=0.2"]).section("trackmania", TrackmaniaSettings)
    with pytest.raises(ConfigError, match="backend"):
        load_settings(sets=["trackmania.backend=joystick"]).section("trackmania", TrackmaniaSettings)


def test_original_config_env_section_migrates():
    from tmrl_core.config_migration import convert_original

    original = {
        "__VERSION__": "0.6.0",
        "VIRTUAL_GAMEPAD": False,
        "ENV": {
            "RTGYM_INTERFACE": "TM20LIDAR",
            "WINDOW_WIDTH": 958,
            "WINDOW_HEIGHT": 488,
            "IMG_GRAYSCALE": False,
            "SLEEP_TIME_AT_RESET": 2.0,
            "IMG_HIST_LEN": 3,
            "RTGYM_CONFIG": {"time_step_duration": 0.06, "act_buf_len": 3, "ep_max_length": 800,
                             "interface_kwargs": {"save_replays": False}},
            "REWARD_CONFIG": {"END_OF_TRACK": 50.0, "MIN_STEPS": 40, "MAX_STRAY": 80.0},
        },
    }
    migration = convert_original(original, plugin_sections={"trackmania"}, models={"trackmania": TrackmaniaSettings})
    section = TrackmaniaSettings(**migration.data["trackmania"])
    assert section.backend == "keyboard"
    window = (section.window_width, section.window_height, section.grayscale, section.history_length)
    assert window == (958, 488, False, 3)
    assert (section.time_step_duration, section.act_buf_len, section.ep_max_length) == (0.06, 3, 800)
    assert (section.end_of_track, section.min_steps, section.max_stray, section.sleep_time_at_reset) == (50, 40, 80, 2)



@pytest.mark.parametrize("env", ["trackmania-full", "trackmania-lidar", "trackmania-lidar-progress"])
def test_each_agent_gets_the_envs_tuning(env):
    """The TrackMania envs' default_settings (plugin.py) are valid for the agents they name: 3e-4 for both, and
    layer-normalised critics for redqsac only (`tmrl run` applying them is checked in test_run_e2e.py)."""
    from tmrl_core import get_component

    tuning = get_component("env", env).default_settings
    settings = {}
    for algo in ("sac", "redqsac"):
        model = get_component("agent", algo).load_settings_model()
        settings[algo] = model.model_validate(tuning[algo])
        assert (settings[algo].lr_actor, settings[algo].lr_critic) == (3e-4, 3e-4)
    assert settings["redqsac"].critic_layer_norm is True
    assert settings["sac"].critic_layer_norm is False
