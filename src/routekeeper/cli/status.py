"""``routekeeper status --url URL``: a running replica's /api/status as tables."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import httpx
import typer
from rich.markup import escape
from rich.table import Table

from routekeeper.cli.common import (
    ApiKeyOption,
    FormatOption,
    OutputFormat,
    Remote,
    UrlOption,
    console,
    fail,
    print_json,
)


def _age(iso: str | None) -> str:
    if not iso:
        return "-"
    seconds = (datetime.now(UTC) - datetime.fromisoformat(iso)).total_seconds()
    return f"{seconds:.1f}s ago" if seconds < 120 else f"{seconds / 60:.0f}m ago"


def render_status(body: dict[str, Any]) -> None:
    replicas = Table(title=f"replicas (answered by {body['replica_id']}, mode {body['mode']})")
    for column in ("id", "phase", "host", "pid", "listen", "started", "heartbeat"):
        replicas.add_column(column)
    for r in body["replicas"]:
        replicas.add_row(
            ("* " if r.get("current") else "") + r["id"],
            r["phase"],
            escape(r["host"]),
            str(r["pid"]),
            r.get("listen") or "-",
            r["started_at"],
            _age(r.get("heartbeat_at")),
        )
    console.print(replicas)
    if body.get("replicas_has_more"):
        console.print("(older replicas: GET /api/replicas)")
    surfaces = Table(title="state surfaces")
    for column in ("surface", "owner", "class", "backend", "ephemeral", "rows"):
        surfaces.add_column(column)
    for s in body["surfaces"]:
        surfaces.add_row(
            s["name"],
            s["owner"],
            s["class"],
            f"{s['backend']} ({s['backend_type']})",
            "[yellow]yes[/]" if s["ephemeral"] else "no",
            "?" if s["rows"] is None else str(s["rows"]),
        )
    console.print(surfaces)
    for error in body.get("errors", []):
        console.print(f"[red]error:[/] {escape(error)}", highlight=False)


def status(
    url: UrlOption = "http://127.0.0.1:8080",
    api_key: ApiKeyOption = None,
    format: FormatOption = OutputFormat.table,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the answer.")] = 5.0,
) -> None:
    """Show the replicas and state surfaces a running routekeeper reports."""
    try:
        remote = Remote(url, api_key)
        response = httpx.get(remote.at("/api/status"), headers=remote.headers, timeout=timeout)
    except httpx.HTTPError as exc:
        fail(f"cannot reach {url}: {exc}")
    if response.status_code != 200:
        fail(f"{url}/api/status answered {response.status_code}: {response.text[:500]}")
    body = response.json()
    if format is OutputFormat.json:
        print_json(body)
    else:
        render_status(body)
