"""pytest plugin used by :func:`routekeeper.testing.restart.collect_restart_coverage`: after
collection, write every restart-marked test's surface and backend as JSON."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from routekeeper.testing.restart import REPORT_ENV


def pytest_collection_finish(session: pytest.Session) -> None:
    target = os.environ.get(REPORT_ENV)
    if not target:
        return
    rows = []
    for item in session.items:
        callspec = getattr(item, "callspec", None)
        backend = callspec.params.get("restart_backend") if callspec else None
        # A test may carry several restart marks: it covers each surface they name.
        for marker in item.iter_markers("restart"):
            surface = marker.kwargs.get("surface")
            if surface and backend:
                rows.append({"nodeid": item.nodeid, "surface": surface, "backend": backend})
    Path(target).write_text(json.dumps(rows))
