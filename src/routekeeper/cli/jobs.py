"""``routekeeper jobs submit|list|show|watch|cancel|retry --url URL``: durable jobs of a
running routekeeper, through its ``/api/jobs`` routes. ``watch`` follows a job's event
stream (resuming after the last event it saw when the connection drops) and draws a
progress bar from its typed progress events."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from routekeeper.cli.common import (
    FormatOption,
    OutputFormat,
    UrlOption,
    console,
    fail,
    print_json,
)
from routekeeper.contract.jobs import JobStatus

app = typer.Typer(help="Durable jobs of a running routekeeper.", no_args_is_help=True)

DEFAULT_URL = "http://127.0.0.1:8080"
TERMINAL = {"job.succeeded", "job.failed", "job.cancelled", "job.crashed"}
JobArg = Annotated[str, typer.Argument(help="The job id (job_...).")]


def _call(method: str, url: str, path: str, **kwargs: Any) -> Any:
    try:
        response = httpx.request(method, f"{url.rstrip('/')}{path}", timeout=30, **kwargs)
    except httpx.HTTPError as exc:
        fail(f"cannot reach {url}: {exc}")
    if response.status_code >= 300:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:300]
        fail(f"{method} {path} answered {response.status_code}: {message}")
    return response.json()


def _progress_text(job: dict[str, Any]) -> str:
    p = job["progress"]
    total = f"/{p['total']}" if p["total"] is not None else ""
    return f"{p['done']}{total} {p['unit'] or ''}".strip()


def _table(jobs: list[dict[str, Any]]) -> Table:
    table = Table()
    for column in ("id", "kind", "status", "attempt", "progress", "created", "error"):
        table.add_column(column)
    for job in jobs:
        table.add_row(
            job["id"],
            escape(job["kind"]),
            job["status"],
            f"{job['attempt']}/{job['max_attempts']}",
            escape(_progress_text(job)),
            job["created_at"][:19],
            escape((job["error"] or "")[:60]),
        )
    return table


@app.command("submit")
def submit_cmd(
    kind: Annotated[str, typer.Argument(help="The job kind, e.g. count.")],
    params: Annotated[str | None, typer.Option(help="The kind's params as a JSON object.")] = None,
    params_file: Annotated[
        Path | None,
        typer.Option(help="A file holding the params as a JSON object.", dir_okay=False),
    ] = None,
    watch: Annotated[bool, typer.Option(help="Then follow it like `jobs watch`.")] = False,
    url: UrlOption = DEFAULT_URL,
    format: FormatOption = OutputFormat.table,
) -> None:
    """Submit a job (POST /api/jobs); prints its id."""
    if params is not None and params_file is not None:
        fail("give --params or --params-file, not both")
    text = params_file.read_text() if params_file is not None else params
    try:
        body = json.loads(text) if text else {}
    except json.JSONDecodeError as exc:
        fail(f"the params are not JSON: {exc}")
    job = _call("POST", url, "/api/jobs", json={"kind": kind, "params": body})
    if format is OutputFormat.json and not watch:
        print_json(job)
    else:
        console.print(f"submitted {job['id']} ({job['kind']}, {job['status']})")
    if watch:
        _watch(url, job["id"])


@app.command("list")
def list_cmd(
    status: Annotated[JobStatus | None, typer.Option(help="Only jobs in this status.")] = None,
    kind: Annotated[str | None, typer.Option(help="Only jobs of this kind.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100, help="How many (1-100).")] = 20,
    after: Annotated[
        str | None, typer.Option(help="Continue after this job id (the next page).")
    ] = None,
    url: UrlOption = DEFAULT_URL,
    format: FormatOption = OutputFormat.table,
) -> None:
    """Jobs, newest first (GET /api/jobs)."""
    query = {"limit": limit, "status": status.value if status else None, "kind": kind}
    query["after"] = after
    page = _call("GET", url, "/api/jobs", params={k: v for k, v in query.items() if v})
    if format is OutputFormat.json:
        print_json(page)
        return
    console.print(_table(page["data"]))
    if page["has_more"]:
        console.print(f"more: --after {page['last_id']}")


@app.command("show")
def show_cmd(
    job_id: JobArg, url: UrlOption = DEFAULT_URL, format: FormatOption = OutputFormat.table
) -> None:
    """One job: status, attempt, progress, checkpoint, result or error."""
    job = _call("GET", url, f"/api/jobs/{job_id}")
    if format is OutputFormat.json:
        print_json(job)
        return
    for key in ("id", "kind", "status", "attempt", "max_attempts", "lease_owner", "error"):
        console.print(f"[bold]{key}[/]: {escape(str(job[key]))}")
    console.print(f"[bold]progress[/]: {escape(_progress_text(job))}")
    for key in ("params", "checkpoint", "result"):
        console.print(f"[bold]{key}[/]: {escape(json.dumps(job[key], ensure_ascii=False))}")


@app.command("cancel")
def cancel_cmd(job_id: JobArg, url: UrlOption = DEFAULT_URL) -> None:
    """Cancel a job (queued: at once; running: within jobs.heartbeat_seconds + 1 s)."""
    job = _call("POST", url, f"/api/jobs/{job_id}/cancel")
    console.print(f"{job['id']}: {job['status']}")


@app.command("retry")
def retry_cmd(
    job_id: JobArg,
    watch: Annotated[bool, typer.Option(help="Then follow it like `jobs watch`.")] = False,
    url: UrlOption = DEFAULT_URL,
) -> None:
    """Queue a failed, cancelled or crashed job again (attempt + 1, from its checkpoint)."""
    job = _call("POST", url, f"/api/jobs/{job_id}/retry")
    console.print(f"{job['id']}: {job['status']} (attempt {job['attempt']} so far)")
    if watch:
        _watch(url, job_id)


@app.command("watch")
def watch_cmd(job_id: JobArg, url: UrlOption = DEFAULT_URL) -> None:
    """Follow a job's events until it finishes, with a progress bar; exits 1 unless it
    succeeded."""
    _watch(url, job_id)


def _watch(url: str, job_id: str) -> None:
    job = _call("GET", url, f"/api/jobs/{job_id}")
    last = 0
    final: dict[str, Any] | None = None
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[unit]} {task.fields[status]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task(job_id, total=job["progress"]["total"], unit="", status="")
        while final is None:
            try:
                for event in _events(url, job_id, last):
                    last = event["seq"]
                    data = event["data"]
                    if event["type"] == "job.progress":
                        progress.update(
                            bar,
                            completed=data["done"],
                            total=data["total"],
                            unit=data["unit"] or "",
                        )
                    progress.update(bar, status=event["status"])
                    if event["type"] in TERMINAL:
                        final = event
            except httpx.HTTPError:
                time.sleep(1)  # reconnect after the last event seen: nothing missed
                continue
            if final is None:  # the stream ended without a terminal event: look again
                job = _call("GET", url, f"/api/jobs/{job_id}")
                if job["status"] in ("succeeded", "failed", "cancelled", "crashed"):
                    break
                time.sleep(1)
    job = _call("GET", url, f"/api/jobs/{job_id}")
    console.print(f"{job_id}: {job['status']}")
    if job["error"]:
        console.print(f"error: {escape(job['error'])}")
    if job["result"] is not None:
        console.print(escape(json.dumps(job["result"], ensure_ascii=False)))
    if job["status"] != "succeeded":
        raise typer.Exit(1)


def _events(url: str, job_id: str, last: int) -> Any:
    headers = {"last-event-id": str(last), "accept": "text/event-stream"}
    path = f"{url.rstrip('/')}/api/jobs/{job_id}/stream"
    with httpx.stream("GET", path, headers=headers, timeout=httpx.Timeout(30, read=60)) as r:
        if r.status_code != 200:
            fail(f"the stream answered {r.status_code}: {r.read()[:300]!r}")
        for line in r.iter_lines():
            if line.startswith("data: "):
                yield json.loads(line[len("data: ") :])
