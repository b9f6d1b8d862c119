"""``tmrl trackmania install-plugin`` and ``check-environment`` as a user runs them (subprocesses)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from tmrl_trackmania.cli import default_openplanet_dir, openplanet_candidates, plugin_source
from tmrl_trackmania.telemetry import RECORD_FIELDS

from tmrl_core.errors import TmrlError


def test_install_plugin_copies_the_openplanet_plugin(run_tmrl, tmp_path):
    target = tmp_path / "OpenplanetNext" / "Plugins"
    result = run_tmrl("trackmania", "install-plugin", "--openplanet-dir", str(target))
    assert result.returncode == 0, str(result)
    installed = sorted(p.name for p in (target / "TMRL").iterdir())
    assert installed == ["info.toml", "main.as"]
    for name in installed:
        assert (target / "TMRL" / name).read_bytes() == (plugin_source() / name).read_bytes()
    assert str(target / "TMRL") in result.stdout and "Load plugin" in result.stdout
    (target / "TMRL" / "main.as").write_text("// an old version\n")
    assert run_tmrl("trackmania", "install-plugin", "--openplanet-dir", str(target)).returncode == 0
    assert (target / "TMRL" / "main.as").read_bytes() == (plugin_source() / "main.as").read_bytes()


def test_openplanet_folder_is_found_or_explained(tmp_path):
    assert openplanet_candidates("win32", tmp_path) == [tmp_path / "OpenplanetNext" / "Plugins"]
    with pytest.raises(TmrlError) as err:
        default_openplanet_dir("linux", tmp_path)
    assert "--openplanet-dir" in err.value.hint and "2225070" in err.value.message
    proton = openplanet_candidates("linux", tmp_path)[0]
    proton.parent.mkdir(parents=True)  # OpenPlanet ran once in the game's Proton prefix
    assert default_openplanet_dir("linux", tmp_path) == proton


def test_the_angelscript_plugin_sends_the_documented_record():
    source = (plugin_source() / "main.as").read_text()
    writes = re.findall(r"^\s*buf\.Write\((.*)\);", source, flags=re.MULTILINE)
    assert len(writes) == len(RECORD_FIELDS) == 11
    fields = ["Speed", "Distance", "Position.x", "Position.y", "Position.z", "InputSteer", "InputGasPedal",
              "InputIsBraking", "IsFinished", "EngineCurGear", "EngineRpm"]
    for written, field in zip(writes, fields, strict=True):  # written in wire order
        assert field in written
    assert "Setting_Port = 9000" in source and '"127.0.0.1"' in source


def test_check_environment_saves_frames_without_a_display(run_tmrl, tmp_path):
    import cv2

    for env, shape in [("trackmania-lidar", (384, 768, 3)), ("trackmania-full", (192, 768, 3))]:
        out = tmp_path / env
        result = run_tmrl(
            "trackmania", "check-environment", "--env", env, "--steps", "12", "--out", str(out),
            "--set", "trackmania.backend=simulated", "--set", "trackmania.sleep_time_at_reset=0",
            env={"DISPLAY": "", "WAYLAND_DISPLAY": ""}, timeout=120,
        )
        assert result.returncode == 0, str(result)
        frames = sorted(out.glob("step_*.png"))
        assert len(frames) == 12
        image = cv2.imread(str(frames[-1]))
        assert image.shape == shape  # lidar: the 256x128 window x3; full: 4 images of 64x64 side by side x3
        assert image.std() > 10  # something drawn, not a blank frame
        rewards = [float(m) for m in re.findall(r"reward ([+-][0-9.]+)", result.stdout)]
        assert len(rewards) == 12 and sum(rewards) > 0  # the simulated car drives itself forward
    if env == "trackmania-full":
        assert np.any(image[:, :192] != image[:, -192:])  # the history shows motion


def test_check_environment_without_display_asks_for_out(run_tmrl):
    result = run_tmrl(
        "trackmania", "check-environment", "--set", "trackmania.backend=simulated",
        env={"DISPLAY": "", "WAYLAND_DISPLAY": ""},
    )
    assert result.returncode != 0
    assert "no display" in result.stderr and "--out" in result.stderr


def test_simulator_without_a_display_or_with_a_wrong_track_says_what_to_do(run_tmrl):
    result = run_tmrl("trackmania", "simulator", "--port", "0", env={"DISPLAY": "", "WAYLAND_DISPLAY": ""})
    assert result.returncode != 0 and "no display" in result.stderr and "Xvfb" in result.stderr, str(result)
    assert "Traceback" not in result.stderr
    result = run_tmrl("trackmania", "simulator", "--track", "monaco")
    assert result.returncode != 0 and "unknown simulated track 'monaco'" in result.stderr, str(result)
    assert "default, oval, tight" in result.stderr
