"""``tmrl plugins``: installed plugins, their components, and load failures."""

from __future__ import annotations

import json

import typer


def register(app: typer.Typer) -> None:
    app.command("plugins")(plugins)


def plugins(
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """List installed plugins with their distribution, version and components; load failures included."""
    from tmrl_core.plugins import HOOK_NAMES, get_plugin_manager

    manager = get_plugin_manager()
    duplicates = manager.duplicates()  # collects every kind, so hook failures are known below
    rows = []
    for info in manager.infos.values():
        components = [
            {"kind": spec.kind, "name": spec.name, "description": spec.description}
            for spec in manager.components_of(info.name)
        ]
        rows.append(
            {
                "name": info.name,
                "distribution": info.distribution,
                "version": info.version,
                "module": info.module,
                "first_party": info.first_party,
                "disabled": info.disabled,
                "error": info.error,
                "components": components,
            }
        )
    failures = [{"plugin": f.plugin, "stage": f.stage, "error": f.error} for f in manager.failures]
    dups = [str(exc.message) for exc in duplicates]
    if as_json:
        typer.echo(json.dumps({"plugins": rows, "failures": failures, "duplicates": dups}, indent=2))
        return

    from rich.console import Console
    from rich.table import Table

    console = Console()
    order = {kind: i for i, kind in enumerate(HOOK_NAMES)}
    for row in rows:
        status = ""
        if row["disabled"]:
            status = " [yellow](disabled)[/yellow]"
        elif row["error"]:
            status = " [red](failed)[/red]"
        console.print(f"[bold]{row['name']}[/bold]  {row['distribution']} {row['version']}{status}")
        if row["error"]:
            console.print(f"  [red]error:[/red] {row['error']}", highlight=False)
        if row["components"]:
            table = Table(show_header=False, box=None, padding=(0, 2), pad_edge=True)
            for comp in sorted(row["components"], key=lambda c: (order.get(c["kind"], 99), c["name"])):
                table.add_row(f"  {comp['kind']}", comp["name"], comp["description"])
            console.print(table)
    for message in dups:
        console.print(f"[red]duplicate:[/red] {message}", highlight=False)
