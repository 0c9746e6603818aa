"""``routekeeper doctor``."""

from __future__ import annotations

import asyncio

import typer
from rich.markup import escape
from rich.table import Table

from routekeeper.cli.common import (
    EXIT_FAILURE,
    ConfigOption,
    FormatOption,
    OutputFormat,
    WorkspaceOption,
    console,
    print_json,
    require_drivers,
    settings_from,
)
from routekeeper.runtime.doctor import Level, diagnose

_STYLE = {Level.OK: "green", Level.WARN: "yellow", Level.ERROR: "bold red"}


def doctor(
    config: ConfigOption = None,
    workspace: WorkspaceOption = None,
    format: FormatOption = OutputFormat.table,
) -> None:
    """Check migrations, SQLite integrity, the contract, stale or crashed replicas and what
    recovery would fix (dry run). Exit 1 when something is wrong; warnings exit 0."""
    settings = settings_from(config, workspace)
    require_drivers(settings)
    findings = asyncio.run(diagnose(settings))
    healthy = all(f.level is not Level.ERROR for f in findings)
    if format is OutputFormat.json:
        print_json({"healthy": healthy, "findings": [f.as_dict() for f in findings]})
    else:
        table = Table(title=f"routekeeper doctor ({settings.workspace})")
        for column in ("check", "subject", "level", "finding"):
            table.add_column(column)
        for f in findings:
            style = _STYLE[f.level]
            table.add_row(
                f.check, escape(f.subject or "-"), f"[{style}]{f.level}[/]", escape(f.message)
            )
        console.print(table)
        console.print("[green]healthy[/]" if healthy else "[bold red]problems found[/]")
    if not healthy:
        raise typer.Exit(EXIT_FAILURE)
