"""``tmrl example ...``: the command group of the example plugin.

This module is imported when `tmrl` starts (to list the group in `tmrl --help`), so it imports only typer; the
command bodies import what they need.
"""

from __future__ import annotations

import typer

app = typer.Typer(help="Commands of the example plugin.", no_args_is_help=True)


@app.command("describe")
def describe(
    target: float | None = typer.Option(None, "--target", help="Override example_env.target for this run."),
) -> None:
    """Build the example environment from the settings and print its spaces and one reset."""
    from tmrl_core.cli import settings_from_cli
    from tmrl_core.plugins import get_component

    spec = get_component("env", "example-env")
    settings = settings_from_cli(overrides={spec.section: {"target": target}})
    env = spec.load()(settings.section(spec.section, spec.load_settings_model()))
    observation, _ = env.reset(seed=0)
    typer.echo(f"target: {env.settings.target}")
    typer.echo(f"observation space: {env.observation_space}")
    typer.echo(f"action space: {env.action_space}")
    typer.echo(f"first observation: {observation.tolist()}")


@app.callback()
def _group() -> None:
    """Commands of the example plugin."""
