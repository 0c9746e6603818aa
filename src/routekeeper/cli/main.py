"""``routekeeper``: the command."""

from __future__ import annotations

import typer

from routekeeper import __version__
from routekeeper.cli import db, doctor, jobs, replay, routing, serve, state, status, worker

app = typer.Typer(
    name="routekeeper",
    help="An OpenAI-compatible LLM router with an explicit, tested state contract.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("serve")(serve.serve)
app.command("status")(status.status)
app.command("doctor")(doctor.doctor)
app.add_typer(state.app, name="state")
app.add_typer(db.app, name="db")
app.add_typer(routing.app, name="routing")
app.add_typer(replay.app, name="replay")
app.command("worker")(worker.worker)
app.add_typer(jobs.app, name="jobs")


@app.command("version")
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def main() -> None:
    app()
