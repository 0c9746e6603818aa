"""``routekeeper replay list|show|tail --url URL``."""

from __future__ import annotations

import json
import time
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
from routekeeper.contract.replay import PASS_THROUGH, LifecycleState

app = typer.Typer(help="Router replay records of a running routekeeper.", no_args_is_help=True)

# The option's first spelling; kept working, not shown in --help.
JsonAlias = Annotated[bool, typer.Option("--json", hidden=True, help="The same as --format json.")]


def _format(format: OutputFormat, as_json: bool) -> OutputFormat:
    return OutputFormat.json if as_json else format


def _get(url: str, path: str, params: dict[str, Any] | None = None, *, api_key: str | None) -> Any:
    remote = Remote(url, api_key)
    try:
        response = httpx.get(remote.at(path), params=params, headers=remote.headers, timeout=10)
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
            escape(r["decision"] or PASS_THROUGH),
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
    api_key: ApiKeyOption = None,
    limit: Annotated[
        int, typer.Option(min=1, max=100, help="How many records to show (1-100).")
    ] = 20,
    decision: Annotated[
        str | None, typer.Option(help="Only records routed by this decision.")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Only records whose selected model is this one.")
    ] = None,
    state: Annotated[
        LifecycleState | None, typer.Option(help="Only records in this lifecycle state.")
    ] = None,
    session: Annotated[
        str | None, typer.Option(help="Only records of this session (its x-session-id).")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(help="Only records started at or after this ISO time (UTC without a zone)."),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(help="Only records started before this ISO time (UTC without a zone)."),
    ] = None,
    q: Annotated[
        str | None,
        typer.Option(
            "--q",
            help="Only records whose captured prompt has every one of these words "
            "(records whose decision captured the request body).",
        ),
    ] = None,
    after: Annotated[
        str | None, typer.Option(help="Continue after this replay id (the next page).")
    ] = None,
    format: FormatOption = OutputFormat.table,
    as_json: JsonAlias = False,
) -> None:
    """The newest replay records, newest first; the filters combine (GET /api/replay)."""
    params = {
        k: v
        for k, v in {
            "limit": limit,
            "decision": decision,
            "model": model,
            "lifecycle_state": state.value if state else None,
            "session_id": session,
            "since": since,
            "until": until,
            "q": q,
            "after": after,
        }.items()
        if v is not None
    }
    page = _get(url, "/api/replay", params, api_key=api_key)
    if _format(format, as_json) is OutputFormat.json:
        print_json(page)
        return
    console.print(_table(page["data"]))
    if page["has_more"]:
        console.print(f"more: --after {page['last_id']}")


@app.command("show")
def show_cmd(
    replay_id: Annotated[str, typer.Argument(help="A replay id (rpl_...).")],
    url: UrlOption = "http://127.0.0.1:8080",
    api_key: ApiKeyOption = None,
    format: FormatOption = OutputFormat.table,
    as_json: JsonAlias = False,
) -> None:
    """One record with every field, captured bodies included (GET /api/replay/{id})."""
    record = _get(url, f"/api/replay/{replay_id}", api_key=api_key)
    if _format(format, as_json) is OutputFormat.json:
        print_json(record)
        return
    table = Table(title=f"replay record {record['id']}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in record.items():
        shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        table.add_row(key, escape(shown))
    console.print(table)


@app.command("tail")
def tail_cmd(
    url: UrlOption = "http://127.0.0.1:8080",
    api_key: ApiKeyOption = None,
    interval: Annotated[float, typer.Option(help="Seconds between polls.", min=0.1)] = 1.0,
    count: Annotated[
        int | None,
        typer.Option(min=1, help="Stop after this many records (default: until Ctrl-C)."),
    ] = None,
    format: FormatOption = OutputFormat.table,
    as_json: JsonAlias = False,
) -> None:
    """Follow new records as they are stored, oldest first (Ctrl-C to stop); json prints one
    record per line."""
    as_lines = _format(format, as_json) is OutputFormat.json
    newest = _get(url, "/api/replay", {"limit": 1}, api_key=api_key)
    after = newest["first_id"]
    shown = 0
    try:
        while count is None or shown < count:
            params: dict[str, Any] = {"order": "asc", "limit": 100}
            if after:
                params["after"] = after
            page = _get(url, "/api/replay", params, api_key=api_key)
            if page["data"]:
                records = page["data"][: None if count is None else count - shown]
                if as_lines:
                    for record in records:
                        typer.echo(json.dumps(record, ensure_ascii=False))
                else:
                    console.print(_table(records))
                shown += len(records)
                after = page["last_id"]
            if not page["has_more"]:
                time.sleep(interval)
    except KeyboardInterrupt:
        pass
