"""``routekeeper db upgrade|current|check``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from routekeeper.cli.common import (
    EXIT_CONTRACT,
    EXIT_FAILURE,
    EXIT_SCHEMA,
    ConfigOption,
    WorkspaceOption,
    console,
    err_console,
    fail,
    require_drivers,
    require_existing_databases,
    settings_from,
)
from routekeeper.contract import BackendKind
from routekeeper.contract.errors import ContractViolation, StorageError
from routekeeper.settings import Settings
from routekeeper.storage.database import Database
from routekeeper.storage.migrate import SchemaStatus, inspect, schema_differences, upgrade
from routekeeper.storage.state import StateStorage

app = typer.Typer(help="Schema migrations of the configured backends.", no_args_is_help=True)

T = TypeVar("T")


def _each_backend(
    settings: Settings, action: Callable[[Database], Awaitable[T]], *, read_only: bool = True
) -> list[T]:
    """Run ``action`` on every backend in use. ``read_only`` commands refuse a SQLite file
    that does not exist rather than create an empty one."""
    try:
        storage = StateStorage(settings)
    except ContractViolation as exc:
        fail(exc.message, EXIT_CONTRACT)
    require_drivers(settings)
    if read_only:
        require_existing_databases(settings)

    async def run() -> list[T]:
        results = []
        try:
            for db in storage.databases.values():
                if db.kind is BackendKind.MEMORY:
                    continue  # nothing to migrate ahead of time: it lives in the serving process
                await db.open()
                results.append(await action(db))
        finally:
            await storage.close()
        return results

    try:
        return asyncio.run(run())
    except StorageError as exc:
        fail(exc.message, EXIT_FAILURE)


@app.command("upgrade")
def upgrade_cmd(config: ConfigOption = None, workspace: WorkspaceOption = None) -> None:
    """Migrate every configured backend to this version's schema (under the migration lock)."""
    settings = settings_from(config, workspace)

    async def action(db: Database) -> tuple[Database, list[str], str | None]:
        with err_console.status(f"migrating {db.name} ({escape(db.describe())})"):
            state = await upgrade(db)
        return db, state.applied, state.current

    for db, applied, current in _each_backend(settings, action, read_only=False):
        if applied:
            console.print(
                f"{db.name} ({escape(db.describe())}): applied {', '.join(applied)}; "
                f"now at {current}"
            )
        else:
            console.print(f"{db.name} ({escape(db.describe())}): already at {current}")


@app.command("current")
def current_cmd(config: ConfigOption = None, workspace: WorkspaceOption = None) -> None:
    """Show each backend's schema revision against this version's head (read-only: a
    missing SQLite file is an error, never created)."""
    settings = settings_from(config, workspace)
    table = Table(title="schema revisions")
    for column in ("backend", "location", "current", "head", "status", "pending"):
        table.add_column(column)
    for db, state in _each_backend(settings, lambda db: _with_db(db, inspect(db))):
        table.add_row(
            db.name,
            db.describe(),
            state.current or "-",
            state.head,
            state.status.value,
            ", ".join(state.pending) or "-",
        )
    console.print(table)


@app.command("check")
def check_cmd(config: ConfigOption = None, workspace: WorkspaceOption = None) -> None:
    """Exit 4 unless every backend is at head and matches the declared schema exactly
    (read-only: a missing SQLite file is an error, exit 1, never created)."""
    settings = settings_from(config, workspace)

    async def action(db: Database) -> tuple[Database, SchemaStatus, list[str]]:
        state = await inspect(db)
        diffs = await schema_differences(db) if state.status is SchemaStatus.CURRENT else []
        return db, state.status, diffs

    bad = False
    for db, status, diffs in _each_backend(settings, action):
        if status is not SchemaStatus.CURRENT:
            bad = True
            console.print(f"[red]{db.name}[/] ({escape(db.describe())}): schema is {status}")
        elif diffs:
            bad = True
            console.print(
                f"[red]{db.name}[/] ({escape(db.describe())}): differs from the declared schema:"
            )
            for diff in diffs:
                console.print(f"  {escape(diff)}", highlight=False)
        else:
            console.print(
                f"[green]{db.name}[/] ({escape(db.describe())}): at head, matches the schema"
            )
    if bad:
        raise typer.Exit(EXIT_SCHEMA)


async def _with_db(db: Database, awaitable: Awaitable[T]) -> tuple[Database, T]:
    return db, await awaitable
