"""The ``tmrl`` command.

Each command module imports its heavy dependencies (torch, gymnasium, a plugin's code) inside the command body, so
``tmrl --help`` and ``tmrl plugins`` stay instant and never import torch (a test holds that).

A command module exposes ``register(app)``; :func:`_register_commands` calls it for the core's modules and mounts
the command groups that plugins register through ``tmrl_register_commands``. A module or plugin group that fails to
load becomes a command that reports the failure, and the rest keeps working.
"""

from __future__ import annotations

import faulthandler
import importlib
import os
import signal
import sys
import traceback
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Optional

import typer

from tmrl_core.__about__ import __version__
from tmrl_core.errors import PluginError, TmrlError
from tmrl_core.plugins import PluginFailure, get_plugin_manager

if TYPE_CHECKING:
    from tmrl_core.settings import Settings

#: what a plugin's command group may use: the option and the loader that give its commands the layered settings
__all__ = ["set_option", "settings_from_cli"]

app = typer.Typer(
    name="tmrl",
    help="Distributed, real-time reinforcement learning: workers act, a server relays, a trainer learns.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)

#: Core command modules, registered in this order when they exist (later milestones add theirs).
CORE_COMMAND_MODULES = (
    "tmrl_core.cli.plugins_cmd",
    "tmrl_core.cli.config_cmd",
    "tmrl_core.cli.run_cmd",
    "tmrl_core.cli.roles_cmd",
    "tmrl_core.cli.runs_cmd",
    "tmrl_core.cli.plugin_cmd",
)

_state: dict[str, Any] = {"debug": False, "registered": False}


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"tmrl-core {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Optional[bool] = typer.Option(  # noqa: UP045 - typer needs Optional on python 3.10
        None, "--version", callback=_version_callback, is_eager=True, help="Show the version and exit."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors.", envvar="TMRL_DEBUG"),
) -> None:
    """Distributed, real-time reinforcement learning: workers act, a server relays, a trainer learns."""
    _state["debug"] = debug


# -- helpers for command modules ------------------------------------------------------------------------------------


def set_option() -> Any:
    """The ``--set section.key=value`` option (repeatable), for commands that read settings::

    def run(sets: list[str] = set_option()) -> None:
        settings = settings_from_cli(sets=sets)
    """
    return typer.Option(
        [],
        "--set",
        metavar="SECTION.KEY=VALUE",
        help="Override one setting (repeatable); the value is read as JSON when it parses, else as text.",
    )


def log_option() -> Any:
    """The ``--log NAME`` option (repeatable): the metrics sinks besides jsonl (``logging.loggers``)."""
    return typer.Option(
        [],
        "--log",
        metavar="NAME",
        help="Send metrics to this logger too, e.g. tensorboard or wandb (repeatable; logging.loggers). "
        "metrics.jsonl is always written.",
    )


def logging_overrides(log: list[str], wandb: bool) -> dict[str, Any]:
    """The ``logging`` and ``wandb`` overrides of ``--log`` and ``--wandb`` (None: not given)."""
    return {
        "logging": {"loggers": list(dict.fromkeys(log)) if log else None},
        "wandb": {"enabled": True if wandb else None},
    }


def settings_from_cli(*, overrides: Mapping[str, Any] | None = None, sets: list[str] | None = None) -> Settings:
    """Load the settings with this command's options on top (``None`` values in ``overrides`` mean "not given")."""
    from tmrl_core.settings import load_settings

    return load_settings(overrides=overrides, sets=sets or ())


# -- registration ---------------------------------------------------------------------------------------------------


def _failed_command(message: str, hint: str, description: str = "", cause: BaseException | None = None) -> Any:
    """A stand-in command for a group that failed to load: it says why, instead of "no such command"."""

    def failed() -> None:
        raise PluginError(message, hint=hint) from cause

    failed.__doc__ = f"(failed to load: see `tmrl plugins`) {description}".strip()
    return failed


def _register_commands() -> None:
    if _state["registered"]:
        return
    _state["registered"] = True
    for module_name in CORE_COMMAND_MODULES:
        _register_core_module(module_name)
    _register_plugin_commands()


def _register_core_module(module_name: str) -> None:
    """Register a core command module; one that is missing or broken (a packaging error) is reported on use."""
    try:
        module = importlib.import_module(module_name)
        module.register(app)
    except Exception as exc:  # noqa: BLE001 - a broken command module must not take the whole CLI down
        _report_broken_module(module_name, exc)


def _report_broken_module(module_name: str, exc: BaseException) -> None:
    name = module_name.rsplit(".", 1)[-1].removesuffix("_cmd")
    message = f"the command module {module_name} failed to load: {type(exc).__name__}: {exc}"
    app.command(
        name,
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        add_help_option=False,
    )(_failed_command(message, "this is a bug in tmrl-core; please report it (--debug shows the traceback)", cause=exc))


def _register_plugin_commands() -> None:
    manager = get_plugin_manager()
    # A command registered without a name is named after its function, as typer does.
    taken = {info.name or info.callback.__name__.replace("_", "-") for info in app.registered_commands if info.callback}
    taken |= {info.name for info in app.registered_groups if info.name}
    for spec in manager.registry("command").all_specs():
        error: str | None = None
        cause: BaseException | None = None
        sub: Any = None
        if spec.name in taken:
            error = f"the command name {spec.name!r} is already taken"
        else:
            try:
                sub = spec.load()
            except Exception as exc:  # noqa: BLE001 - a plugin's broken CLI must not break the others
                error = exc.message if isinstance(exc, TmrlError) else f"{type(exc).__name__}: {exc}"
                cause = exc
            else:
                if not isinstance(sub, typer.Typer):
                    error = f"{spec.factory!r} is a {type(sub).__name__}, not a typer.Typer"
        if error is None:
            app.add_typer(sub, name=spec.name, help=spec.description or None)
            taken.add(spec.name)
            continue
        manager.failures.append(PluginFailure(spec.plugin, f"command {spec.name!r}", error))
        if spec.name in taken:
            continue
        taken.add(spec.name)
        app.command(
            spec.name,
            context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
            add_help_option=False,
        )(
            _failed_command(
                f"the command group {spec.name!r} of plugin {spec.plugin!r} failed to load: {error}",
                "reinstall the plugin, or disable it with TMRL_DISABLE_PLUGINS=" + spec.plugin,
                spec.description,
                cause,
            )
        )


# -- running --------------------------------------------------------------------------------------------------------


def render_error(exc: BaseException, debug: bool) -> int:
    """Print a user error as one message with a hint; the traceback only with --debug. Returns the exit status."""
    if debug:
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


def _click_exception_types() -> tuple[type[BaseException], ...]:
    """ClickException as typer raises it: typer >= 0.16 vendors click as ``typer._click``; older ones use click."""
    types: list[type[BaseException]] = []
    try:
        from typer._click.exceptions import ClickException as Vendored

        types.append(Vendored)
    except ImportError:
        pass
    try:
        from click.exceptions import ClickException

        types.append(ClickException)
    except ImportError:
        pass
    return tuple(types)


def _exit_status(result: Any) -> int:
    """The exit status for what ``app(standalone_mode=False)`` returned.

    Without standalone mode, ``typer.Exit(code)`` (``--help``, ``--version``, Ctrl-C as 130) is returned as its code
    rather than raised; a command that returns normally returns its value (None).
    """
    if isinstance(result, bool):
        return int(result)
    if isinstance(result, int):
        return result
    return 0


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``tmrl`` console script: always ends with ``sys.exit(status)``.

    Status: 0 on success, 2 for a usage error (unknown command or option, bad option value), the error's
    ``exit_code`` (1 unless it says otherwise) for a :class:`TmrlError`, 130 on Ctrl-C, 1 for an internal error.

    As the console script (``argv`` None), a command that loaded torch ends without the interpreter's teardown once
    it has closed what it opened (see :func:`tmrl_core.pipeline.exit_without_teardown`): the teardown only costs
    seconds of garbage collection there, and it once aborted a finished ``tmrl run`` ("terminate called without an
    active exception", status -6) when torch's native threads met the interpreter's finalization.

    A process that seems stuck tells where: ``kill -USR1 PID`` prints every thread's Python stack to its standard
    error (``faulthandler``), and the process goes on.
    """
    if argv is None and hasattr(signal, "SIGUSR1"):
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        _main(argv)
    except SystemExit as exc:
        if argv is not None or "torch" not in sys.modules:
            raise
        from tmrl_core.pipeline import exit_without_teardown

        if exc.code is None or isinstance(exc.code, int):
            exit_without_teardown(exc.code or 0)
        print(exc.code, file=sys.stderr)
        exit_without_teardown(1)


def _main(argv: list[str] | None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("TMRL_DEBUG", "").strip().lower() in {"1", "true", "yes", "on"}
    click_errors = _click_exception_types()
    try:
        _register_commands()
        result = app(args=args, prog_name="tmrl", standalone_mode=False)
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
        if isinstance(exc, click_errors):
            _show_click_error(exc)
            sys.exit(getattr(exc, "exit_code", 2))
        sys.exit(render_error(exc, debug))
    sys.exit(_exit_status(result))


def _show_click_error(exc: BaseException) -> None:
    try:
        from typer import rich_utils
    except ImportError:
        rich_utils = None  # type: ignore[assignment]
    if rich_utils is not None:
        # Renders like typer's standalone mode; for bare `tmrl` (NoArgsIsHelpError) the help is already printed.
        rich_utils.rich_format_error(exc)  # type: ignore[arg-type]
    else:
        exc.show()  # type: ignore[attr-defined]
