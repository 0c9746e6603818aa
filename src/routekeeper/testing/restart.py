"""Restart-test coverage: every registered surface needs a restart test on every backend.

Restart tests carry ``@pytest.mark.restart(surface="<name>")`` and take the ``restart_backend``
fixture (parametrized over ``sqlite`` and ``postgres``). :func:`collect_restart_coverage` asks
pytest itself (``--collect-only`` in a subprocess, with :mod:`restart_collector` as a plugin)
which surface/backend pairs the collected tests cover; :func:`missing_restart_tests` lists the
pairs nobody covers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from routekeeper.contract import SURFACES

RESTART_BACKENDS = ("sqlite", "postgres")
REPORT_ENV = "ROUTEKEEPER_RESTART_REPORT"


def collect_restart_coverage(
    paths: Sequence[Path | str], *, rootdir: Path | None = None
) -> dict[str, set[str]]:
    """surface -> backends covered by the restart tests pytest collects under ``paths``."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "restart.json"
        env = {**os.environ, REPORT_ENV: str(report)}
        cmd = [
            sys.executable,
            "-m",
            "pytest",
            "--collect-only",
            "-q",
            "-p",
            "routekeeper.testing.restart_collector",
            *map(str, paths),
        ]
        if rootdir is not None:
            cmd += ["--rootdir", str(rootdir)]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=rootdir)
        if done.returncode not in (0, 5) or not report.exists():
            raise RuntimeError(f"collecting restart tests failed:\n{done.stdout}\n{done.stderr}")
        rows = json.loads(report.read_text())
    coverage: dict[str, set[str]] = {}
    for row in rows:
        coverage.setdefault(row["surface"], set()).add(row["backend"])
    return coverage


def missing_restart_tests(
    coverage: dict[str, set[str]], surfaces: Iterable[str] | None = None
) -> list[str]:
    """``surface on backend`` for every pair without a restart test."""
    names = list(surfaces) if surfaces is not None else list(SURFACES)
    return [
        f"{name} on {backend}"
        for name in names
        for backend in RESTART_BACKENDS
        if backend not in coverage.get(name, set())
    ]
