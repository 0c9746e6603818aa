"""Options and error handling shared by every command."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from routekeeper.contract.errors import ConfigError
from routekeeper.settings import Settings, load_settings

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
        help="Directory for local state; relative paths in the config resolve against it. "
        "[default: ./.routekeeper/]",
        envvar="ROUTEKEEPER_WORKSPACE",
        file_okay=False,
    ),
]


def fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def settings_from(config: Path | None, workspace: Path | None) -> Settings:
    try:
        return load_settings(config, workspace=workspace)
    except ConfigError as exc:
        fail(exc.message, EXIT_CONFIG)
