"""Tests on several pytest-xdist workers that share one machine.

A test that cannot share the machine (it makes a load of its own, or asserts on a timing
window that a busy neighbour would stretch) carries ``@pytest.mark.exclusive``. On an xdist
worker it waits until no other worker's test is running, and no worker starts a test until
it has finished; in a run without workers (plain ``pytest``) the marker changes nothing.

Two ``flock(2)`` files in a directory that every worker of one run shares (the controller
makes it and hands it to each worker): every test holds ``tests.lock`` shared, an exclusive
test holds it exclusively. A test first passes ``gate.lock``, which an exclusive test holds
while it waits and runs, so a stream of shared holders cannot starve it."""

from __future__ import annotations

import fcntl
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

MARKER = "exclusive"
SHARE_DIR_KEY = "routekeeper_share_dir"
MARKER_HELP = (
    f"{MARKER}: under pytest-xdist, runs while no other worker runs a test (a test that "
    "makes load of its own or asserts on timing windows)"
)


class MachineShare:
    """Shared and exclusive turns on one machine, across processes."""

    def __init__(self, directory: Path) -> None:
        self.gate = directory / "gate.lock"
        self.tests = directory / "tests.lock"

    @contextmanager
    def shared(self) -> Iterator[None]:
        with open(self.tests, "a") as tests:
            with open(self.gate, "a") as gate:
                fcntl.flock(gate, fcntl.LOCK_EX)  # waits while an exclusive test has a turn
                fcntl.flock(tests, fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(tests, fcntl.LOCK_UN)

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with open(self.gate, "a") as gate, open(self.tests, "a") as tests:
            fcntl.flock(gate, fcntl.LOCK_EX)  # no new shared holder from here on
            try:
                fcntl.flock(tests, fcntl.LOCK_EX)  # the running ones have finished
                try:
                    yield
                finally:
                    fcntl.flock(tests, fcntl.LOCK_UN)
            finally:
                fcntl.flock(gate, fcntl.LOCK_UN)


def configure_node(config: pytest.Config, workerinput: dict[str, Any]) -> None:
    """Controller: one directory for the run's locks, handed to every worker."""
    directory = getattr(config, "_routekeeper_share_dir", None)
    if directory is None:
        directory = tempfile.mkdtemp(prefix="routekeeper-xdist-")
        config._routekeeper_share_dir = directory  # type: ignore[attr-defined]
    workerinput[SHARE_DIR_KEY] = directory


def unconfigure(config: pytest.Config) -> None:
    directory = getattr(config, "_routekeeper_share_dir", None)
    if directory is not None:
        shutil.rmtree(directory, ignore_errors=True)


def share_of(config: pytest.Config) -> MachineShare | None:
    """The run's machine share on an xdist worker, None in a run without workers."""
    workerinput = getattr(config, "workerinput", None)
    if not workerinput or SHARE_DIR_KEY not in workerinput:
        return None
    return MachineShare(Path(workerinput[SHARE_DIR_KEY]))


@contextmanager
def turn(item: pytest.Item) -> Iterator[None]:
    """Hold the machine as ``item`` needs it for its setup, call and teardown."""
    share = share_of(item.config)
    if share is None:
        yield
        return
    alone = item.get_closest_marker(MARKER) is not None
    with share.exclusive() if alone else share.shared():
        yield
