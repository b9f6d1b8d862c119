"""``tmrl config ...`` and ``tmrl install``."""

from __future__ import annotations

import typer

config_app = typer.Typer(help="Show, create and locate the settings file.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
    app.command("install")(install)


@config_app.command("path")
def path() -> None:
    """Print where the config file is (it may not exist yet)."""
    from tmrl_core.paths import config_file

    typer.echo(str(config_file()))


def install() -> None:
    """Create the data folder (~/TmrlData or $TMRL_HOME) and its subfolders, and say where it is."""
    from tmrl_core.paths import SUBFOLDERS, install as do_install

    root = do_install()
    typer.echo(f"tmrl data folder: {root}")
    for name in SUBFOLDERS:
        typer.echo(f"  {name}/")
