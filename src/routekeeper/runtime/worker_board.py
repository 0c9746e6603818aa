"""What the workers of one ``serve --workers N`` show each other.

Every worker is a replica of its own, with its own components (the replay writer) and its own
Prometheus registry, while a client's request lands on whichever worker accepts it. So that
``/api/status`` and ``/metrics`` show every worker whichever one answers, each worker publishes
what its components report and its metric samples on a board that all of them map: an
anonymous file (unlinked at once, so nothing is left on disk) that the supervisor creates and
every worker inherits, one fixed-size slot per worker, each written under a POSIX record lock
on its slot. A worker publishes every ``PUBLISH_SECONDS`` once it is ready, and once more when
it stops; the supervisor clears the slot of a worker that exited. Readers see another worker's
figures as of its last publication (``as_of``); their own are read live.

This is per-process telemetry (counters since the process started), not state: a worker that
dies takes its figures with it, and its replacement starts from zero under a new replica id.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import struct
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from prometheus_client.metrics_core import Metric

from routekeeper.runtime.components import Component
from routekeeper.tasks import cancel_and_wait

log = logging.getLogger(__name__)

SLOT_BYTES = 1024 * 1024  # sparse: only what a worker wrote takes space
PUBLISH_SECONDS = 0.25
_HEADER = struct.Struct(">I")


class WorkerBoard:
    """The board, opened on an inherited file descriptor. ``slot`` is this worker's (None in
    the supervisor, which only clears slots)."""

    def __init__(self, fd: int, slots: int, slot: int | None = None) -> None:
        if slot is not None and not 0 <= slot < slots:
            raise ValueError(f"slot {slot} is not within 0..{slots - 1}")
        self.fd = fd
        self.slots = slots
        self.slot = slot
        self.replica_id: str | None = None
        self._components: Sequence[Component] = ()
        self._families: Callable[[], Iterable[Metric]] = tuple
        self._task: asyncio.Task[None] | None = None
        self.publish_errors = 0
        self.unreadable = 0
        """Reads of another worker's slot that found no publication in it (skipped)."""

    @staticmethod
    def create(slots: int) -> int:
        """A new, empty board for ``slots`` workers: its file descriptor (inheritable)."""
        handle = tempfile.TemporaryFile()  # unlinked: it lives as long as an open descriptor
        fd = os.dup(handle.fileno())
        handle.close()
        os.ftruncate(fd, slots * SLOT_BYTES)
        os.set_inheritable(fd, True)
        return fd

    # -- slots -----------------------------------------------------------------------------

    def _write(self, slot: int, data: bytes) -> None:
        if _HEADER.size + len(data) > SLOT_BYTES:
            raise ValueError(f"{len(data)} bytes do not fit a worker's slot")
        start = slot * SLOT_BYTES
        fcntl.lockf(self.fd, fcntl.LOCK_EX, SLOT_BYTES, start, os.SEEK_SET)
        try:
            os.pwrite(self.fd, _HEADER.pack(len(data)) + data, start)
        finally:
            fcntl.lockf(self.fd, fcntl.LOCK_UN, SLOT_BYTES, start, os.SEEK_SET)

    def read(self, slot: int) -> dict[str, Any] | None:
        """What the worker in ``slot`` last published (None: nothing, or cleared). Raises
        ValueError when the slot does not hold a publication (see :meth:`others`)."""
        start = slot * SLOT_BYTES
        fcntl.lockf(self.fd, fcntl.LOCK_SH, SLOT_BYTES, start, os.SEEK_SET)
        try:
            (length,) = _HEADER.unpack(os.pread(self.fd, _HEADER.size, start))
            if _HEADER.size + length > SLOT_BYTES:
                raise ValueError(f"slot {slot} claims {length} bytes, more than a slot holds")
            data = os.pread(self.fd, length, start + _HEADER.size) if length else b""
        finally:
            fcntl.lockf(self.fd, fcntl.LOCK_UN, SLOT_BYTES, start, os.SEEK_SET)
        if not data:
            return None
        return _checked(json.loads(data), slot)

    def clear(self, slot: int) -> None:
        self._write(slot, b"")

    def others(self) -> list[dict[str, Any]]:
        """The other workers' last publications, by slot. A slot that does not hold one (a
        worker killed in the middle of a write it had no lock for, a foreign write) is
        skipped, counted in ``unreadable`` and logged once: one bad slot never takes
        ``/api/status`` or ``/metrics`` down."""
        out = []
        for slot in range(self.slots):
            if slot == self.slot:
                continue
            try:
                entry = self.read(slot)
            except ValueError as exc:  # json.JSONDecodeError and UnicodeDecodeError too
                self.unreadable += 1
                if self.unreadable == 1:
                    log.warning("worker board: skipping slot %d: %s", slot, exc)
                continue
            if entry is not None:
                out.append(entry)
        return out

    # -- publishing ------------------------------------------------------------------------

    def attach(
        self,
        replica_id: str,
        components: Sequence[Component],
        families: Callable[[], Iterable[Metric]],
    ) -> None:
        """What this worker publishes: its replica id, its components' status and the metric
        families of its own registry."""
        self.replica_id = replica_id
        self._components = components
        self._families = families

    def entry(self) -> dict[str, Any]:
        """This worker's figures, now."""
        return {
            "replica_id": self.replica_id,
            "pid": os.getpid(),
            "as_of": time.time(),
            "components": {c.surface: c.status() for c in self._components},
            "metrics": encode_families(self._families()),
        }

    def publish(self) -> None:
        if self.slot is None:
            raise RuntimeError("the supervisor's board has no slot of its own")
        self._write(self.slot, json.dumps(self.entry(), separators=(",", ":")).encode())

    def begin(self) -> None:
        """Publish now and every PUBLISH_SECONDS (from ready until stop)."""
        if self._task is None:
            self._task = asyncio.create_task(self._publish_loop(), name="worker board")

    async def stop(self) -> None:
        """Stop publishing, after a last publication (the final counters of a drain)."""
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)
            self._publish_logged()

    async def _publish_loop(self) -> None:
        while True:
            self._publish_logged()
            await asyncio.sleep(PUBLISH_SECONDS)

    def _publish_logged(self) -> None:
        try:
            self.publish()
        except Exception:  # telemetry must never take the worker down
            self.publish_errors += 1
            if self.publish_errors == 1:
                log.exception("replica %s: could not publish to the worker board", self.replica_id)


def _checked(entry: Any, slot: int) -> dict[str, Any]:
    """A publication as :meth:`WorkerBoard.entry` makes it, checked as far as readers rely on
    it (the metric samples are checked as they are decoded)."""
    if not (
        isinstance(entry, dict)
        and isinstance(entry.get("replica_id"), str)
        and isinstance(entry.get("as_of"), int | float)
        and isinstance(entry.get("components"), dict)
        and all(isinstance(r, dict) for r in entry["components"].values())
        and isinstance(entry.get("metrics"), list)
    ):
        raise ValueError(f"slot {slot} does not hold a worker's publication")
    try:
        decode_families(entry["metrics"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"slot {slot} holds metric samples that do not decode: {exc}") from exc
    return entry


def encode_families(families: Iterable[Metric]) -> list[list[Any]]:
    """Metric families as JSON values (name, help, type, unit, samples)."""
    return [
        [
            f.name,
            f.documentation,
            f.type,
            f.unit,
            [[s.name, s.labels, s.value] for s in f.samples],
        ]
        for f in families
    ]


def decode_families(encoded: Iterable[list[Any]], **labels: str) -> list[Metric]:
    """The families :func:`encode_families` encoded, with ``labels`` added to every sample."""
    out = []
    for name, documentation, typ, unit, samples in encoded:
        family = Metric(name, documentation, typ, unit)
        for sample_name, sample_labels, value in samples:
            if not (
                isinstance(sample_name, str)
                and isinstance(sample_labels, dict)
                and all(isinstance(v, str) for v in sample_labels.values())
                and isinstance(value, int | float)
                and not isinstance(value, bool)
            ):
                raise ValueError(f"sample {sample_name!r} of {name!r} is not a sample")
            family.add_sample(sample_name, {**sample_labels, **labels}, value)
        out.append(family)
    return out


def merge_families(groups: Iterable[Iterable[Metric]]) -> list[Metric]:
    """One family per name, with the samples of every group (each already labelled apart)."""
    merged: dict[str, Metric] = {}
    for group in groups:
        for family in group:
            into = merged.get(family.name)
            if into is None:
                merged[family.name] = into = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
            into.samples.extend(family.samples)
    return list(merged.values())
