"""``tmrl plugins``: installed plugins, their components, and load failures.

Listing reads the specs only (names, descriptions); no factory is imported, so no torch either.
"""

from __future__ import annotations

import json
from typing import Any

import typer

from tmrl_core.plugins import HOOK_NAMES, get_plugin_manager


def register(app: typer.Typer) -> None:
    app.command("plugins")(plugins)


def plugins(
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """List installed plugins with their distribution, version and components; load failures included."""
    manager = get_plugin_manager()
    report = plugin_report(manager)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    _print_report(report)


def plugin_report(manager: Any) -> dict[str, Any]:
    """What ``tmrl plugins --json`` prints: ``plugins`` (one entry per plugin), ``failures``, ``duplicates``."""
    manager.collect_all()  # runs every hook, so that hook failures and duplicates are known below
    duplicates = manager.duplicates()
    conflicted = {(kind, name) for kind in HOOK_NAMES for name in manager.registry(kind).conflicts()}
    refused = {(r.spec.kind, r.spec.name, r.spec.plugin) for r in manager.refused}
    order = {kind: i for i, kind in enumerate(HOOK_NAMES)}
    rows = []
    for info in manager.infos.values():
        specs = sorted(manager.components_of(info.name), key=lambda s: (order.get(s.kind, 99), s.name))
        rows.append(
            {
                "name": info.name,
                "distribution": info.distribution,
                "version": info.version,
                "module": info.module,
                "first_party": info.first_party,
                "disabled": info.disabled,
                "error": info.error,
                "components": [
                    {
                        "kind": spec.kind,
                        "name": spec.name,
                        "description": spec.description,
                        "duplicate": (spec.kind, spec.name) in conflicted,
                        "refused": (spec.kind, spec.name, spec.plugin) in refused,
                    }
                    for spec in specs
                ],
            }
        )
    failures = [{"plugin": f.plugin, "stage": f.stage, "error": f.error} for f in manager.failures]
    return {"plugins": rows, "failures": failures, "duplicates": [exc.message for exc in duplicates]}


def _print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    for row in report["plugins"]:
        status = ""
        if row["disabled"]:
            status = " [yellow](disabled)[/yellow]"
        elif row["error"]:
            status = " [red](failed)[/red]"
        elif not row["first_party"] and row["distribution"] != "tmrl-core":
            status = " [dim](third party)[/dim]"
        console.print(
            f"[bold]{escape(row['name'])}[/bold]  {escape(row['distribution'])} {escape(row['version'])}{status}"
        )
        if row["error"]:
            console.print(f"  [red]error:[/red] {escape(row['error'])}")
        if row["components"]:
            table = Table(show_header=False, box=None, padding=(0, 2), pad_edge=True)
            for comp in row["components"]:
                name = comp["name"] + (" (refused)" if comp["refused"] else " (duplicate)" if comp["duplicate"] else "")
                table.add_row(f"  {comp['kind']}", escape(name), escape(comp["description"]))
            console.print(table)
    problems = [f"{f['plugin']} ({f['stage']}): {f['error']}" for f in report["failures"]]
    problems += [f"duplicate: {message}" for message in report["duplicates"]]
    if problems:
        console.print()
        console.print("[bold red]Problems[/bold red]")
        for problem in problems:
            console.print(f"  - {escape(problem)}")
