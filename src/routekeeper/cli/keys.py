"""``routekeeper keys create|list|revoke``: API keys, on the state directly (no server
needed, so the first admin key of an empty database is made here). ``create`` prints the
key's id first and the secret alone on the last line."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from routekeeper.cli.common import (
    EXIT_CONFIG,
    EXIT_CONTRACT,
    EXIT_FAILURE,
    ConfigOption,
    FormatOption,
    OutputFormat,
    WorkspaceOption,
    console,
    err_console,
    fail,
    print_json,
    require_drivers,
    settings_from,
)
from routekeeper.contract import BackendKind
from routekeeper.contract.auth import LABEL_MAX, Role, check_tenant, parse_duration
from routekeeper.contract.errors import ContractViolation, NotFound, StorageError
from routekeeper.contract.pages import MAX_PAGE_SIZE, SortOrder
from routekeeper.settings import Settings
from routekeeper.storage.keys_store import ApiKeysStore
from routekeeper.storage.state import StateStorage

app = typer.Typer(
    help="API keys (on the configured state directly; no server needed).", no_args_is_help=True
)
T = TypeVar("T")


def _with_store(settings: Settings, action: Callable[[ApiKeysStore], Awaitable[T]]) -> T:
    """Open the api_keys backend (migrating it like `serve` does), run ``action``, close."""
    try:
        storage = StateStorage(settings)
    except ContractViolation as exc:
        fail(exc.message, EXIT_CONTRACT)
    if storage.database_for("api_keys").kind is BackendKind.MEMORY:
        fail(
            "api_keys is on an in-memory backend: a key made here would be gone when this "
            "command exits; point state at a SQLite file or PostgreSQL",
            EXIT_CONFIG,
        )
    require_drivers(settings)

    async def run() -> T:
        try:
            await storage.open()
            await storage.migrate()
            return await action(storage.store(ApiKeysStore))
        finally:
            await storage.close()

    try:
        return asyncio.run(run())
    except NotFound as exc:
        fail(exc.message, EXIT_FAILURE)
    except StorageError as exc:
        fail(exc.message, EXIT_FAILURE)


@app.command("create")
def create(
    tenant: Annotated[str, typer.Option(help="The tenant the key acts for.")],
    label: Annotated[str, typer.Option(help="A name for people.")] = "",
    role: Annotated[Role, typer.Option(help="member: /v1 of its tenant; admin: everything.")] = (
        Role.MEMBER
    ),
    expires_in: Annotated[
        str | None, typer.Option(help="Lifetime, e.g. 30d, 12h, 2w (default: no expiry).")
    ] = None,
    rpm: Annotated[
        int | None, typer.Option(min=1, max=1_000_000, help="Requests per minute it may make.")
    ] = None,
    config: ConfigOption = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Create a key. Prints its id first and the secret alone on the last line: the secret
    is shown once and never stored."""
    try:
        check_tenant(tenant)
        lifetime = parse_duration(expires_in) if expires_in is not None else None
    except ValueError as exc:
        fail(str(exc), EXIT_CONFIG)
    if len(label) > LABEL_MAX or not label.isprintable():
        fail(f"--label must be at most {LABEL_MAX} printable characters", EXIT_CONFIG)
    settings = settings_from(config, workspace)
    record, secret = _with_store(
        settings,
        lambda store: store.create(
            tenant_id=tenant,
            label=label,
            role=role,
            expires_in=lifetime,
            requests_per_minute=rpm,
        ),
    )
    typer.echo(record.id)
    expires = record.expires_at.isoformat() if record.expires_at else "never"
    err_console.print(
        f"tenant {escape(record.tenant_id)}, role {record.role.value}, expires {expires}"
        + (f", {rpm} requests/minute" if rpm else "")
        + ". The secret below is shown once; store it now:",
        highlight=False,
    )
    typer.echo(secret)


@app.command("list")
def list_keys(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's keys.")] = None,
    limit: Annotated[
        int, typer.Option(min=1, max=MAX_PAGE_SIZE, help="Show at most this many keys.")
    ] = MAX_PAGE_SIZE,
    format: FormatOption = OutputFormat.table,
    config: ConfigOption = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Keys, newest first (never their secrets)."""
    settings = settings_from(config, workspace)
    page = _with_store(
        settings,
        lambda store: store.list_keys(tenant_id=tenant, limit=limit, order=SortOrder.DESC),
    )
    if format is OutputFormat.json:
        print_json(
            [
                {
                    "id": k.id,
                    "tenant": k.tenant_id,
                    "label": k.label,
                    "role": k.role.value,
                    "created_at": k.created_at.isoformat(),
                    "expires_at": k.expires_at.isoformat() if k.expires_at else None,
                    "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None,
                    "last_used_at": k.last_used_at.isoformat() if k.last_used_at else None,
                    "requests_per_minute": k.requests_per_minute,
                }
                for k in page.data
            ]
        )
        return
    table = Table(title="API keys")
    for column in ("id", "tenant", "label", "role", "created", "expires", "state", "last used"):
        table.add_column(column)
    for k in page.data:
        state = "revoked" if k.revoked_at else "active"
        table.add_row(
            k.id,
            escape(k.tenant_id),
            escape(k.label),
            k.role.value,
            k.created_at.strftime("%Y-%m-%d %H:%M"),
            k.expires_at.strftime("%Y-%m-%d %H:%M") if k.expires_at else "never",
            state,
            k.last_used_at.strftime("%Y-%m-%d %H:%M") if k.last_used_at else "-",
        )
    console.print(table)
    if page.has_more:
        console.print(f"(first {limit}; --limit shows up to {MAX_PAGE_SIZE})")


@app.command("revoke")
def revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (key_...).")],
    config: ConfigOption = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Revoke a key: every replica refuses it within auth.cache_seconds (at once with Redis)."""
    settings = settings_from(config, workspace)
    record = _with_store(settings, lambda store: store.revoke(key_id))
    assert record.revoked_at is not None
    console.print(f"revoked {record.id} at {record.revoked_at.isoformat()}")
    if settings.redis.url is not None:
        _announce(settings.redis.url, record.id, settings.auth.cache_seconds)


def _announce(url: str, key_id: str, cache_seconds: float) -> None:
    """Tell the running replicas over Redis (the revocation is committed either way)."""
    from routekeeper.auth.revocations import RevocationNotAnnounced, publish_revocation

    try:
        asyncio.run(publish_revocation(url, key_id))
    except RevocationNotAnnounced as exc:
        err_console.print(
            f"warning: {escape(exc.message)}; running replicas refuse the key within "
            f"auth.cache_seconds ({cache_seconds:g} s) instead",
            highlight=False,
        )
