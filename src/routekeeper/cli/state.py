"""``routekeeper state check|inventory``."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from routekeeper.cli.common import (
    EXIT_CONTRACT,
    ConfigOption,
    WorkspaceOption,
    console,
    fail,
    settings_from,
)
from routekeeper.storage.inventory import inventory_json, inventory_markdown
from routekeeper.storage.placement import contract_problems, placements

app = typer.Typer(
    help="The state contract: check a configuration, print the inventory.", no_args_is_help=True
)


class InventoryFormat(StrEnum):
    md = "md"
    json = "json"


@app.command("check")
def check(config: ConfigOption = None, workspace: WorkspaceOption = None) -> None:
    """Check that the configuration keeps the state contract (exit 3 when it does not)."""
    settings = settings_from(config, workspace)
    table = Table(title=f"state placement (mode: {settings.state.mode})")
    for column in ("surface", "class", "backend", "type", "location", "ephemeral"):
        table.add_column(column)
    for p in placements(settings):
        table.add_row(
            p.surface.name,
            p.surface.state_class.value,
            p.backend,
            p.kind.value,
            escape(p.location),
            "yes" if p.ephemeral else "no",
        )
    console.print(table)
    problems = contract_problems(settings, processes=settings.server.workers)
    if problems:
        fail(
            "the configuration breaks the state contract:\n"
            + "\n".join(f"  - {p}" for p in problems),
            EXIT_CONTRACT,
        )
    console.print("[green]ok:[/] every surface is on a backend its class allows")


@app.command("inventory")
def inventory(
    config: ConfigOption = None,
    workspace: WorkspaceOption = None,
    format: Annotated[
        InventoryFormat,
        typer.Option("--format", "-f", help="md (docs/state-inventory.md) or json."),
    ] = InventoryFormat.md,
) -> None:
    """Print every registered surface with its class and backend (md or json)."""
    settings = settings_from(config, workspace)
    if format is InventoryFormat.json:
        typer.echo(json.dumps(inventory_json(settings), indent=2))
    else:
        typer.echo(inventory_markdown(settings), nl=False)
