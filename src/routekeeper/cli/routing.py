"""``routekeeper routing explain``."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from routekeeper.cli.common import (
    EXIT_CONFIG,
    ConfigOption,
    FormatOption,
    OutputFormat,
    WorkspaceOption,
    console,
    fail,
    print_json,
    settings_from,
)
from routekeeper.contract.errors import RoutekeeperError
from routekeeper.routing.engine import RoutingEngine, build_embedder
from routekeeper.routing.explain import explain
from routekeeper.routing.request import prompt_input

app = typer.Typer(help="Routing: see how a prompt would be routed.", no_args_is_help=True)


def _parse_pairs(values: list[str], what: str) -> dict[str, str]:
    out = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            fail(f"{what} must look like key=value, got {value!r}", EXIT_CONFIG)
        out[key] = val
    return out


@app.command("explain")
def explain_cmd(
    prompt: Annotated[str, typer.Argument(help="The user prompt to route.")],
    config: ConfigOption = None,
    workspace: WorkspaceOption = None,
    metadata: Annotated[
        list[str], typer.Option("--metadata", "-m", help="Request metadata key=value (repeat).")
    ] = [],  # noqa: B006 - typer needs a list default
    header: Annotated[
        list[str], typer.Option("--header", "-H", help="Request header name=value (repeat).")
    ] = [],  # noqa: B006
    user: Annotated[str | None, typer.Option(help="The request's `user` field.")] = None,
    format: FormatOption = OutputFormat.table,
) -> None:
    """Which signals match (with scores), which decisions match, which wins and why. No model
    is called; embedding signals use the configured embedder."""
    settings = settings_from(config, workspace)
    if not any(d.when is None for d in settings.decisions):
        fail("no decisions are configured, so nothing is routed", EXIT_CONFIG)
    inp = prompt_input(
        prompt,
        metadata=_parse_pairs(metadata, "--metadata"),
        user=user,
        headers=_parse_pairs(header, "--header"),
    )

    async def run() -> dict[str, Any]:
        engine = RoutingEngine(settings, build_embedder(settings))
        try:
            await engine.prepare()
            return await explain(engine, inp)
        finally:
            await engine.aclose()

    try:
        result = asyncio.run(run())
    except RoutekeeperError as exc:
        fail(exc.message)
    if format is OutputFormat.json:
        print_json(result)
        return
    signals = Table(title=f"signals ({result['tokens']} tokens, estimated)")
    for column in ("signal", "matched", "score", "detail"):
        signals.add_column(column)
    for s in result["signals"]:
        signals.add_row(
            s["ref"],
            "[green]yes[/]" if s["matched"] else "no",
            f"{s['score']:g}",
            escape(json.dumps(s["detail"], ensure_ascii=False)),
        )
    console.print(signals)
    decisions = Table(title="decisions")
    for column in ("decision", "priority", "matched", "selected"):
        decisions.add_column(column)
    for d in result["decisions"]:
        matched = "default" if d["default"] else ("[green]yes[/]" if d["matched"] else "no")
        decisions.add_row(
            d["name"], str(d["priority"]), matched, "[bold]<-[/]" if d["selected"] else ""
        )
    console.print(decisions)
    console.print(
        f"[bold]{escape(result['decision'])}[/] -> model [bold]{escape(result['model'])}[/]: "
        f"{escape(result['reason'])}"
    )
