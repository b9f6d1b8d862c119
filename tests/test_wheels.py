"""The five distributions as a user gets them: wheels and sdists built, checked by ``twine check``, installed (not
editable) into a fresh virtual environment from that wheelhouse the way a user installs from the index, then used.

Slow (a fresh venv installs torch and the rest: minutes), so it runs in its own nox session, ``nox -s wheels``, which
CI runs too (``.ci/run``); a plain ``pytest`` skips it unless ``TMRL_TEST_WHEELS=1``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import time
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    os.environ.get("TMRL_TEST_WHEELS") != "1", reason="slow: run by `nox -s wheels` (or set TMRL_TEST_WHEELS=1)"
)

ROOT = Path(__file__).resolve().parents[1]
PROJECTS = {
    "tmrl-core": ROOT,
    "tmrl-sac": ROOT / "plugins" / "tmrl-sac",
    "tmrl-redq": ROOT / "plugins" / "tmrl-redq",
    "tmrl-tlspyo": ROOT / "plugins" / "tmrl-tlspyo",
    "tmrl-trackmania": ROOT / "plugins" / "tmrl-trackmania",
}
TIMINGS: dict[str, float] = {}


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: no PYTHONPATH pointing at this checkout, no TMRL_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TMRL_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update({"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb", **extra})
    return env


def run(args: list[str], *, timeout: float = 900, check: bool = True, **kw) -> subprocess.CompletedProcess[str]:
    t0 = time.monotonic()
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kw)
    TIMINGS[" ".join(str(a) for a in args[:4])] = time.monotonic() - t0
    if check and result.returncode != 0:
        raise AssertionError(f"$ {' '.join(map(str, args))}\n[{result.returncode}]\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheelhouse")
    t0 = time.monotonic()
    for project in PROJECTS.values():
        # --no-isolation: the build backend (hatchling) is installed beside this test, like the rest of its tools
        run([sys.executable, "-m", "build", "--no-isolation", "--wheel", "--sdist", "--outdir", str(out), str(project)])
    TIMINGS["build the five wheels and sdists"] = time.monotonic() - t0
    return out


def test_every_distribution_is_ready_to_publish(wheelhouse: Path) -> None:
    run([sys.executable, "-m", "twine", "check", "--strict", *map(str, sorted(wheelhouse.iterdir()))])
    for dist in PROJECTS:
        package = dist.replace("-", "_")
        [wheel] = wheelhouse.glob(f"{package}-*.whl")
        names = zipfile.ZipFile(wheel).namelist()
        info = f"{wheel.name.split('-py3')[0]}.dist-info"
        assert f"{info}/licenses/LICENSE" in names, (wheel.name, names)
        assert f"{package}/py.typed" in names, wheel.name
        meta = Parser().parsestr(zipfile.ZipFile(wheel).read(f"{info}/METADATA").decode())
        assert meta["License-Expression"] == "MIT", wheel.name
        assert meta["Description-Content-Type"] == "text/markdown", wheel.name
        assert meta.get_payload().lstrip().startswith(f"# {dist}"), wheel.name  # the README is the long description
        assert not any(n.startswith(("tests/", f"{package}/tests/")) for n in names), wheel.name
        [sdist] = wheelhouse.glob(f"{package}-*.tar.gz")
        members = tarfile.open(sdist).getnames()
        top = sdist.name.removesuffix(".tar.gz")
        for needed in ("LICENSE", "README.md", "pyproject.toml", "PKG-INFO", f"{package}/py.typed"):
            assert f"{top}/{needed}" in members, (sdist.name, needed)
    [trackmania] = wheelhouse.glob("tmrl_trackmania-*.whl")
    names = zipfile.ZipFile(trackmania).namelist()
    assert "tmrl_trackmania/openplanet/TMRL/main.as" in names and "tmrl_trackmania/openplanet/TMRL/info.toml" in names


def test_pip_install_core_then_trackmania_from_the_wheelhouse(wheelhouse: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)])
    python, tmrl = str(venv / "bin" / "python"), str(venv / "bin" / "tmrl")
    home = tmp_path / "TmrlData"
    env = clean_env(TMRL_HOME=str(home))
    # torch==2.13.0 comes through the pin (the CPU build lies on this machine's disk)
    constraints = str(ROOT / "constraints.txt")
    pip = [python, "-m", "pip", "install", "--quiet", "--find-links", str(wheelhouse), "-c", constraints]

    run([*pip, "tmrl-core"], env=env)
    alone = json.loads(run([tmrl, "plugins", "--json"], env=env, cwd=tmp_path).stdout)
    assert [p["distribution"] for p in alone["plugins"]] == ["tmrl-core"]
    refused = run([tmrl, "run", "--env", "pendulum", "--env-steps", "100"], env=env, cwd=tmp_path, check=False)
    assert refused.returncode == 1, refused
    assert "Hint: pip install tmrl-sac" in refused.stderr and "known agents: none" not in refused.stderr, refused

    run([*pip, "tmrl-core", "tmrl-trackmania"], env=env)
    # (from tmp_path: `python -c` puts the current folder first on sys.path, and this checkout holds tmrl_core/)
    code = "import tmrl_core, tmrl_redq; print(tmrl_core.__file__, tmrl_redq.__file__)"
    where = run([python, "-c", code], env=env, cwd=tmp_path)
    assert all(str(venv) in path and "site-packages" in path for path in where.stdout.split()), where.stdout
    listing = json.loads(run([tmrl, "plugins", "--json"], env=env, cwd=tmp_path).stdout)
    plugins = {p["distribution"]: p for p in listing["plugins"]}
    assert set(plugins) == {"tmrl-core", "tmrl-sac", "tmrl-redq", "tmrl-trackmania"}, plugins
    assert all(p["error"] is None and not p["disabled"] for p in plugins.values()), plugins
    assert {c["name"] for c in plugins["tmrl-redq"]["components"]} == {"redqsac"}
    # the product's promise resolves: trackmania-full and redqsac found, compatible, with their settings
    code = (
        "from tmrl_core.pipeline import prepare\n"
        "p = prepare('trackmania-full', 'redqsac', name_after_components=True)\n"
        "print(p.env.plugin, p.agent.plugin, p.settings.run.name)"
    )
    prepared = run([python, "-c", code], env=env, cwd=tmp_path)
    assert prepared.stdout.split() == ["trackmania", "redq", "trackmania-full-redqsac"], prepared.stdout

    trained = run(
        [tmrl, "run", "--env", "pendulum", "--algo", "sac", "--env-steps", "400", "--set", "sac.hidden_sizes=[32,32]",
         "--set", "training.steps_per_round=50"],
        env=env, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert "run pendulum-sac finished" in trained.stdout and "training steps" in trained.stdout, trained.stdout
    tested = run([tmrl, "test", "--run-name", "pendulum-sac"], env=env, cwd=tmp_path)
    assert "mean return over 1 episodes" in tested.stdout
    print("\n".join(f"{seconds:7.1f} s  {what}" for what, seconds in TIMINGS.items()))
