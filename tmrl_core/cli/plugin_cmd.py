"""``tmrl plugin new NAME``: write a complete plugin package to start from (see :mod:`tmrl_core.scaffold`)."""

from __future__ import annotations

from pathlib import Path

import typer

plugin_app = typer.Typer(help="Write plugins: tmrl plugin new NAME [--env] [--agent] ...", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(plugin_app, name="plugin")


@plugin_app.command("new")
def new(
    name: str = typer.Argument(..., help="The plugin's name: tmrl-NAME, import package tmrl_NAME."),
    env: bool = typer.Option(False, "--env", help="An environment (NAME-env)."),
    agent: bool = typer.Option(False, "--agent", help="A training agent (NAME-agent, DDPG)."),
    memory: bool = typer.Option(False, "--memory", help="A memory and its compressor (NAME-memory, NAME-float16)."),
    transport: bool = typer.Option(False, "--transport", help="A transport (NAME-transport)."),
    command: bool = typer.Option(False, "--command", help="A command group (tmrl NAME)."),
    directory: Path = typer.Option(Path("."), "--dir", help="Where to write the tmrl-NAME folder."),
) -> None:
    """Write tmrl-NAME/: pyproject with the entry point, plugin.py, the chosen components (all when none is chosen),
    tests using the core's contracts, and a README. It installs with `pip install -e` and its tests pass as written."""
    from tmrl_core.scaffold import new_plugin

    chosen = [k for k, on in (("env", env), ("agent", agent), ("memory", memory), ("transport", transport),
                              ("command", command)) if on]  # fmt: skip
    root = new_plugin(name, directory, chosen)
    typer.echo(f"wrote {root}")
    typer.echo(f"next: pip install -e {root} && tmrl plugins && pytest {root / 'tests'}")
