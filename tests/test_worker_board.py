"""The worker board's slots: what one worker publishes, another reads; a slot that does not
hold a publication is skipped and counted, so ``/api/status`` and ``/metrics`` keep working."""

from __future__ import annotations

import json
import os
import struct

import pytest
from prometheus_client import CollectorRegistry, Counter

from routekeeper.runtime.worker_board import SLOT_BYTES, WorkerBoard, decode_families


@pytest.fixture
def board_fd():
    fd = WorkerBoard.create(3)
    yield fd
    os.close(fd)


def _publisher(fd: int, slot: int, replica: str) -> WorkerBoard:
    registry = CollectorRegistry()
    Counter("rk_test_requests", "requests", registry=registry).inc(3)
    board = WorkerBoard(fd, 3, slot)
    board.attach(replica, (), registry.collect)
    return board


def _raw(fd: int, slot: int, data: bytes, length: int | None = None) -> None:
    header = struct.pack(">I", len(data) if length is None else length)
    os.pwrite(fd, header + data, slot * SLOT_BYTES)


def test_a_publication_is_read_by_the_other_workers(board_fd):
    _publisher(board_fd, 1, "rep_one").publish()
    reader = WorkerBoard(board_fd, 3, 0)
    [entry] = reader.others()
    assert entry["replica_id"] == "rep_one"
    [family] = [
        f
        for f in decode_families(entry["metrics"], replica="rep_one")
        if f.name == "rk_test_requests"
    ]
    assert {s.labels["replica"] for s in family.samples} == {"rep_one"}
    assert {s.name: s.value for s in family.samples}["rk_test_requests_total"] == 3
    assert reader.unreadable == 0


@pytest.mark.parametrize(
    "data,length",
    [
        (b"{not json", None),
        (b"\xff\xfe", None),
        (b"[1, 2]", None),
        (json.dumps({"replica_id": 5, "as_of": 1, "components": {}, "metrics": []}).encode(), None),
        (
            json.dumps(
                {"replica_id": "r", "as_of": 1, "components": {}, "metrics": [["m", "h"]]}
            ).encode(),
            None,
        ),
        (
            json.dumps(
                {
                    "replica_id": "r",
                    "as_of": 1,
                    "components": {},
                    "metrics": [["m", "h", "counter", "", [["m_total", {"a": 1}, 1]]]],
                }
            ).encode(),
            None,
        ),
        (
            json.dumps(
                {
                    "replica_id": "r",
                    "as_of": 1,
                    "components": {},
                    "metrics": [["m", "h", "counter", "", [["m_total", {}, "x"]]]],
                }
            ).encode(),
            None,
        ),
        (b"{}", SLOT_BYTES),  # a length beyond the slot
    ],
    ids=[
        "bad-json",
        "not-utf8",
        "not-an-object",
        "bad-replica",
        "short-family",
        "label-not-text",
        "value-not-number",
        "length-beyond-slot",
    ],
)
def test_an_unreadable_slot_is_skipped_and_counted_not_raised(board_fd, data, length):
    _publisher(board_fd, 1, "rep_good").publish()
    _raw(board_fd, 2, data, length)
    reader = WorkerBoard(board_fd, 3, 0)
    assert [e["replica_id"] for e in reader.others()] == ["rep_good"]
    assert reader.unreadable == 1
    with pytest.raises(ValueError):
        reader.read(2)


def test_a_cleared_slot_is_empty(board_fd):
    publisher = _publisher(board_fd, 1, "rep_one")
    publisher.publish()
    WorkerBoard(board_fd, 3).clear(1)
    assert WorkerBoard(board_fd, 3, 0).others() == []
