"""``tmrl config show|init|path|migrate`` and ``tmrl install``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from tmrl_core.cli import set_option
from tmrl_core.errors import ConfigError
from tmrl_core.paths import SUBFOLDERS, config_file
from tmrl_core.paths import install as do_install

config_app = typer.Typer(
    help="Show, create, locate and migrate the settings file.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
    app.command("install")(install)


@config_app.command("path")
def path() -> None:
    """Print where the config file is (it may not exist yet)."""
    typer.echo(str(config_file()))


@config_app.command("show")
def show(
    prefix: Optional[str] = typer.Argument(  # noqa: UP045 - typer needs Optional on python 3.10
        None, help="Only keys that start with this (e.g. training, or server.port)."
    ),
    sets: list[str] = set_option(),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
    all_sections: bool = typer.Option(
        False,
        "--all",
        help="Also list every key of every installed plugin's section with its default (imports their settings "
        "models, which can take a few seconds).",
    ),
) -> None:
    """Print every setting, its effective value and where it came from (default, file, env var, --set).

    Core sections are listed in full; a plugin's section is listed in full when PREFIX names it or with --all, else
    with the keys that are set. Secrets are shown as ****.
    """
    from tmrl_core.settings import load_settings, plugin_settings_models, settings_provenance

    settings = load_settings(sets=sets)
    warnings: list[str] = []
    models: dict[str, Any] = {}
    wanted = None if all_sections else ({prefix.split(".", 1)[0]} if prefix else set())
    if wanted is None or wanted:
        models, warnings = plugin_settings_models(sections=wanted)
        for name, model in list(models.items()):
            try:
                settings.section(name, model)
            except ConfigError as exc:
                warnings.append(f"section {name}: {exc.message}")
                del models[name]
    entries = [e for e in settings_provenance(settings, models=models) if _matches(e.key, prefix)]
    if as_json:
        payload = {
            "config_file": str(_config_file()),
            "settings": [{"key": e.key, "value": e.shown_value(), "source": e.source} for e in entries],
            "warnings": warnings,
        }
        typer.echo(json.dumps(payload, indent=2))
        return
    if not entries:
        typer.echo(f"no setting starts with {prefix!r}", err=True)
        raise typer.Exit(1)
    width = max(len(e.key) for e in entries)
    values = [json.dumps(e.shown_value()) for e in entries]
    vwidth = min(max(len(v) for v in values), 40)
    typer.echo(f"# config file: {_config_file()}")
    for entry, value in zip(entries, values, strict=True):
        typer.echo(f"{entry.key:<{width}}  {value:<{vwidth}}  {entry.source}")
    for warning in warnings:
        typer.secho(f"warning: {warning}", fg=typer.colors.YELLOW, err=True)


def _matches(key: str, prefix: str | None) -> bool:
    if not prefix:
        return True
    return key == prefix or key.startswith(prefix.rstrip(".") + ".")


def _config_file() -> Path:
    return config_file()


@config_app.command("init")
def init(
    force: bool = typer.Option(False, "--force", help="Overwrite an existing config file (a backup is kept)."),
    plugins: bool = typer.Option(False, "--plugins", help="Also write the default sections of every installed plugin."),
) -> None:
    """Write a config file with every default value (refuses to overwrite one without --force)."""
    from tmrl_core.settings import (
        backup_path,
        default_config,
        keys_without_default,
        plugin_settings_models,
        write_config_file,
    )

    target = _config_file()
    backup = None
    if target.exists():
        if not force:
            raise ConfigError(
                f"the config file {target} already exists",
                hint="`tmrl config show` shows what it holds; `tmrl config init --force` replaces it (keeping a "
                "backup)",
            )
        backup = backup_path(target)
        backup.write_bytes(target.read_bytes())
    models: dict[str, Any] = {}
    if plugins:
        models, warnings = plugin_settings_models()
        for warning in warnings:
            typer.secho(f"warning: {warning}", fg=typer.colors.YELLOW, err=True)
    write_config_file(target, default_config(models=models))
    typer.echo(f"wrote {target}")
    for key in keys_without_default(models):
        typer.secho(
            f"warning: {key} has no default: it is written as null; set it (in the file, TMRL_ variables or --set) "
            "before using its component",
            fg=typer.colors.YELLOW,
            err=True,
        )
    if backup is not None:
        typer.echo(f"the previous file is kept as {backup}")


@config_app.command("migrate")
def migrate(
    source: Optional[Path] = typer.Option(  # noqa: UP045 - typer needs Optional on python 3.10
        None, "--from", help="The original tmrl config.json to convert (default: the data folder's config file)."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the converted file; write nothing."),
) -> None:
    """Convert a config.json of the original tmrl to tmrl-core's layout (the old file is kept as a backup)."""
    from tmrl_core.config_migration import migrate_file

    target = _config_file()
    migration, backup = migrate_file(source or target, target, dry_run=dry_run)
    for old, new in migration.moved:
        typer.echo(f"  {old} -> {new}")
    for old, reason in migration.dropped:
        typer.echo(f"  {old}: dropped ({reason})")
    for warning in migration.warnings:
        typer.secho(f"warning: {warning}", fg=typer.colors.YELLOW, err=True)
    if dry_run:
        typer.echo(json.dumps(_masked(migration.data), indent=2))
        return
    if backup is not None:
        typer.echo(f"the previous file is kept as {backup}")
    typer.echo(f"wrote {target}")


def _masked(data: Any, key: str = "") -> Any:
    from tmrl_core.settings import MASK, is_secret_name

    if isinstance(data, dict):
        return {k: _masked(v, k) for k, v in data.items()}
    if key and data not in (None, "") and is_secret_name((key,)):
        return MASK
    return data


def install() -> None:
    """Create the data folder (~/TmrlData or $TMRL_HOME) and its subfolders, and say where it is."""
    root = do_install()
    typer.echo(f"tmrl data folder: {root}")
    for name in SUBFOLDERS:
        typer.echo(f"  {name}/")
