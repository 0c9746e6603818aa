"""``routekeeper replay list|show|tail --url URL``."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import httpx
import typer
from rich.markup import escape
from rich.table import Table

from routekeeper.cli.common import console, fail

app = typer.Typer(help="Router replay records of a running routekeeper.", no_args_is_help=True)

UrlOption = Annotated[
    str, typer.Option(help="Base URL of a running replica.", envvar="ROUTEKEEPER_URL")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _get(url: str, path: str, params: dict[str, Any] | None = None) -> Any:
    try:
        response = httpx.get(f"{url.rstrip('/')}{path}", params=params, timeout=10)
    except httpx.HTTPError as exc:
        fail(f"cannot reach {url}: {exc}")
    if response.status_code != 200:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:300]
        fail(f"{path} answered {response.status_code}: {message}")
    return response.json()


def _table(records: list[dict[str, Any]]) -> Table:
    table = Table()
    for column in (
        "id",
        "started",
        "decision",
        "model",
        "state",
        "reason",
        "ms",
        "tokens",
        "session",
    ):
        table.add_column(column)
    for r in records:
        table.add_row(
            r["id"],
            r["started_at"][:23],
            escape(r["decision"] or "(pass-through)"),
            escape(r["selected_model"] or "-"),
            r["lifecycle_state"],
            r["terminal_reason"] or "-",
            "-" if r["total_ms"] is None else f"{r['total_ms']:.1f}",
            "-" if r["total_tokens"] is None else str(r["total_tokens"]),
            escape(r["session_id"] or "-"),
        )
    return table


@app.command("list")
def list_cmd(
    url: UrlOption = "http://127.0.0.1:8080",
    limit: Annotated[int, typer.Option(min=1, max=100)] = 20,
    decision: Annotated[str | None, typer.Option()] = None,
    model: Annotated[str | None, typer.Option(help="The selected model.")] = None,
    state: Annotated[str | None, typer.Option(help="lifecycle_state")] = None,
    session: Annotated[str | None, typer.Option(help="x-session-id")] = None,
    after: Annotated[str | None, typer.Option(help="Continue after this id.")] = None,
    as_json: JsonOption = False,
) -> None:
    """The newest replay records (filters combine)."""
    params = {
        k: v
        for k, v in {
            "limit": limit,
            "decision": decision,
            "model": model,
            "lifecycle_state": state,
            "session_id": session,
            "after": after,
        }.items()
        if v is not None
    }
    page = _get(url, "/api/replay", params)
    if as_json:
        typer.echo(json.dumps(page, indent=2))
        return
    console.print(_table(page["data"]))
    if page["has_more"]:
        console.print(f"more: --after {page['last_id']}")


@app.command("show")
def show_cmd(replay_id: str, url: UrlOption = "http://127.0.0.1:8080") -> None:
    """One record, every field."""
    typer.echo(json.dumps(_get(url, f"/api/replay/{replay_id}"), indent=2))


@app.command("tail")
def tail_cmd(
    url: UrlOption = "http://127.0.0.1:8080",
    interval: Annotated[float, typer.Option(help="Seconds between polls.", min=0.1)] = 1.0,
    count: Annotated[int | None, typer.Option(help="Stop after this many records.")] = None,
) -> None:
    """Follow new records as they are stored (Ctrl-C to stop)."""
    newest = _get(url, "/api/replay", {"limit": 1})
    after = newest["first_id"]
    shown = 0
    try:
        while count is None or shown < count:
            params: dict[str, Any] = {"order": "asc", "limit": 100}
            if after:
                params["after"] = after
            page = _get(url, "/api/replay", params)
            if page["data"]:
                records = page["data"][: None if count is None else count - shown]
                console.print(_table(records))
                shown += len(records)
                after = page["last_id"]
            if not page["has_more"]:
                time.sleep(interval)
    except KeyboardInterrupt:
        pass
