"""API keys for a benchmark server with ``auth.mode: api_key``: made with ``routekeeper keys
create`` on its configuration and workspace before it starts (as an operator would)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

AUTH_ENV = {"ROUTEKEEPER_AUTH__MODE": "api_key"}


def create_key(config: Path, workspace: Path, *, tenant: str, role: str) -> str:
    """A new key's secret (the last line ``keys create`` prints)."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "routekeeper",
            "keys",
            "create",
            "--tenant",
            tenant,
            "--role",
            role,
            "--label",
            "benchmark",
            "--config",
            str(config),
            "--workspace",
            str(workspace),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1]
