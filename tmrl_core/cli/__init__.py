"""The ``tmrl`` command.

Each command module imports its heavy dependencies (torch, gymnasium, a plugin's code) inside the command body, so
``tmrl --help`` and ``tmrl plugins`` stay instant and never import torch (a test holds that).
"""

from __future__ import annotations

import os
import sys
from typing import Optional

import typer

from tmrl_core.__about__ import __version__
from tmrl_core.errors import TmrlError

app = typer.Typer(
    name="tmrl",
    help="Distributed, real-time reinforcement learning: workers act, a server relays, a trainer learns.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)

_state = {"debug": False}


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"tmrl-core {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Optional[bool] = typer.Option(
        None, "--version", callback=_version_callback, is_eager=True, help="Show the version and exit."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors.", envvar="TMRL_DEBUG"),
) -> None:
    """Distributed, real-time reinforcement learning: workers act, a server relays, a trainer learns."""
    _state["debug"] = debug


def _register_commands() -> None:
    from tmrl_core.cli import config_cmd, plugins_cmd

    plugins_cmd.register(app)
    config_cmd.register(app)
    _register_optional("tmrl_core.cli.run_cmd")
    _register_plugin_commands()


def _register_optional(module_name: str) -> None:
    """Commands of later milestones register themselves if their module is present."""
    import importlib

    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            return
        raise
    module.register(app)


def _register_plugin_commands() -> None:
    from tmrl_core.plugins import get_plugin_manager

    manager = get_plugin_manager()
    for spec in manager.registry("command"):
        try:
            sub = spec.load()
        except TmrlError as exc:
            manager.failures.append(_failure(spec.plugin, f"command {spec.name!r}", str(exc)))
            continue
        app.add_typer(sub, name=spec.name, help=spec.description or None)


def _failure(plugin: str, stage: str, error: str):  # type: ignore[no-untyped-def]
    from tmrl_core.plugins import PluginFailure

    return PluginFailure(plugin, stage, error)


def render_error(exc: BaseException, debug: bool) -> int:
    """Print a user error as one message with a hint; the traceback only with --debug."""
    if debug:
        import traceback

        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    if isinstance(exc, TmrlError):
        typer.secho(f"Error: {exc.message}", fg=typer.colors.RED, err=True)
        if exc.hint:
            typer.secho(f"Hint: {exc.hint}", err=True)
        if not debug:
            typer.secho("(run with --debug for the traceback)", dim=True, err=True)
        return exc.exit_code
    typer.secho(f"Internal error: {type(exc).__name__}: {exc}", fg=typer.colors.RED, err=True)
    if not debug:
        typer.secho("(run with --debug for the traceback, and please report it)", dim=True, err=True)
    return 1


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``tmrl`` console script."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:]) or os.environ.get("TMRL_DEBUG") == "1"
    try:
        _register_commands()
        app(args=argv, standalone_mode=False)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.secho("Aborted.", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        typer.secho("Interrupted.", err=True)
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as exc:  # noqa: BLE001 - the one place where every error becomes a message
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        sys.exit(render_error(exc, debug))
