"""Options and error handling shared by every command."""

from __future__ import annotations

import importlib
import json
import sys
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from routekeeper.contract import BackendKind
from routekeeper.contract.errors import ConfigError
from routekeeper.settings import Settings, load_settings
from routekeeper.storage.config import SQLiteBackend
from routekeeper.storage.placement import placements

EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_CONTRACT = 3
EXIT_SCHEMA = 4

# Tables keep whole ids and paths when piped or captured (rich would wrap at 80 columns).
PIPE_WIDTH = 200
console = Console(width=None if sys.stdout.isatty() else PIPE_WIDTH)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else PIPE_WIDTH)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="YAML configuration file (ROUTEKEEPER_* variables override it).",
        envvar="ROUTEKEEPER_CONFIG",
        dir_okay=False,
    ),
]
WorkspaceOption = Annotated[
    Path | None,
    typer.Option(
        "--workspace",
        "-w",
        help="Directory for local state; relative paths in the config resolve against it "
        "(default: ./.routekeeper/).",
        envvar="ROUTEKEEPER_WORKSPACE",
        file_okay=False,
    ),
]


def fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def warn(message: str) -> None:
    err_console.print(
        f"[bold yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True
    )


def settings_from(config: Path | None, workspace: Path | None) -> Settings:
    try:
        return load_settings(config, workspace=workspace)
    except ConfigError as exc:
        fail(exc.message, EXIT_CONFIG)


class OutputFormat(StrEnum):
    table = "table"
    json = "json"


FormatOption = Annotated[
    OutputFormat,
    typer.Option("--format", "-f", help="table (for people) or json (for programs)."),
]

UrlOption = Annotated[
    str, typer.Option(help="Base URL of a running replica.", envvar="ROUTEKEEPER_URL")
]
ApiKeyOption = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        help="An admin API key for a server with auth.mode: api_key.",
        envvar="ROUTEKEEPER_API_KEY",
        show_envvar=True,
    ),
]


@dataclass(frozen=True)
class Remote:
    """A running server a command talks to: its base URL and the key it sends."""

    url: str
    api_key: str | None = None

    def at(self, path: str) -> str:
        return f"{self.url.rstrip('/')}{path}"

    @property
    def headers(self) -> dict[str, str]:
        """The ``Authorization`` header for ``--api-key`` (none without one)."""
        return {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}


def print_json(value: Any) -> None:
    """JSON for programs: indented, non-ASCII text as it is (UTF-8), never ``\\u`` escapes."""
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False))


# How the README tells a user to add the PostgreSQL driver; the CLI says exactly this.
POSTGRES_EXTRA_INSTALL = "pip install 'routekeeper[postgres]'"
POSTGRES_EXTRA_INSTALL_CHECKOUT = ".venv/bin/pip install -e '.[postgres]'"


def require_drivers(settings: Settings) -> None:
    """Exit (1) with the install command when a backend some surface uses needs a database
    driver this installation lacks (PostgreSQL without the ``postgres`` extra), or when
    ``redis.url`` is set without the ``redis`` extra."""
    _require_redis_client(settings)
    postgres = sorted({p.backend for p in placements(settings) if p.kind is BackendKind.POSTGRES})
    missing = postgres if postgres and not _importable("psycopg") else []
    if missing:
        which = (
            f"backend {missing[0]} is"
            if len(missing) == 1
            else f"backends {', '.join(missing)} are"
        )
        fail(
            f"{which} PostgreSQL, and its driver (psycopg) is not installed: "
            f"install the `postgres` extra with {POSTGRES_EXTRA_INSTALL} "
            f"(in a checkout: {POSTGRES_EXTRA_INSTALL_CHECKOUT})",
            EXIT_FAILURE,
        )


def _require_redis_client(settings: Settings) -> None:
    if settings.redis.url is not None and not _importable("redis"):
        fail(
            "redis.url is set, and the Redis client is not installed: install the `redis` "
            "extra with pip install 'routekeeper[redis]' "
            "(in a checkout: .venv/bin/pip install -e '.[redis]')",
            EXIT_FAILURE,
        )


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:  # not installed, or installed without what it needs (libpq)
        return False
    return True


def require_existing_databases(settings: Settings) -> None:
    """Exit (1) when a SQLite file some surface uses does not exist, so that a read-only
    command on a mistyped ``--workspace`` creates nothing instead of an empty database."""
    seen = set()
    for p in placements(settings):
        backend = settings.state.backends[p.backend]
        if p.backend in seen or not isinstance(backend, SQLiteBackend):
            continue
        seen.add(p.backend)
        path = settings.resolve_path(backend.path)
        if not path.exists():
            fail(
                f"backend {p.backend}: no database file {path} (nothing was served or migrated "
                "with this --workspace/--config; check them). Nothing was created; "
                "`routekeeper db upgrade` or `routekeeper serve` creates it.",
                EXIT_FAILURE,
            )
