"""Binding the rows of the hot SQLite inserts: a stored response with its two items (an input
message and an output message) and a finished replay record, through Core's bind processors
(the baseline) and through ``storage.sqlite_binds`` (what the writer uses), in the same run.

    .venv/bin/python bench/sqlite_binds.py [--batches 3000] [--rounds 5]

Binding runs on the SQLite writer thread while it holds the interpreter lock, so each
microsecond here is one the event loop waits for. One batch is four responses (what a flush
at concurrency 8 carries) turned into rows and bound value by value, as
``sqlite_inserts.insert_rows`` does; the replay figure binds four records the way
``replay_writes.insert_rows`` does. Prints one JSON line: per kind, the median over rounds of
the microseconds per response (or record) of each way, and their ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import sqlite

sys.path.insert(0, str(Path(__file__).parent))
from replay_records import chat_record, completed

from routekeeper.contract.ids import new_id
from routekeeper.contract.responses import (
    ItemKind,
    ResponseItemRecord,
    ResponseRecord,
    ResponseStatus,
)
from routekeeper.storage.records import to_row
from routekeeper.storage.schema.replay import router_replay
from routekeeper.storage.schema.responses import response_items, responses
from routekeeper.storage.sqlite_binds import sqlite_processor
from routekeeper.storage.types import utcnow

DIALECT = sqlite.dialect()
BATCH = 4


def _response() -> list[tuple[Table, Any]]:
    """A finished stored response and its items, as the relay stores one."""
    response_id, asked, answered = new_id("resp"), new_id("msg"), new_id("msg")
    record = ResponseRecord(
        id=response_id,
        replica_id=new_id("rep"),
        status=ResponseStatus.COMPLETED,
        model="auto",
        created_at=utcnow(),
        request={
            "model": "auto",
            "instructions": None,
            "metadata": {},
            "temperature": None,
            "top_p": None,
            "text": {"format": {"type": "text"}},
            "truncation": "disabled",
            "tool_choice": "auto",
            "tools": [],
            "store": True,
        },
        selected_model="small",
        replay_id=new_id("rpl"),
        completed_at=utcnow(),
        usage={"input_tokens": 3, "output_tokens": 5, "total_tokens": 8},
    )
    text = [{"type": "input_text", "text": "benchmark me"}]
    reply = [{"type": "output_text", "text": "a reply", "annotations": [], "logprobs": []}]
    messages = [
        (asked, ItemKind.INPUT, "user", text),
        (answered, ItemKind.OUTPUT, "assistant", reply),
    ]
    items = [
        ResponseItemRecord(
            id=item_id,
            response_id=response_id,
            position=position,
            kind=kind,
            data={"id": item_id, "type": "message", "role": role, "content": content},
        )
        for position, (item_id, kind, role, content) in enumerate(messages)
    ]
    return [(responses, record), *((response_items, item) for item in items)]


def _replay() -> list[tuple[Table, Any]]:
    return [(router_replay, replace(chat_record(), **completed()))]


def _core(table: Table, column: str) -> Any:
    return table.c[column].type.dialect_impl(DIALECT).bind_processor(DIALECT)


def _short(table: Table, column: str) -> Any:
    return sqlite_processor(table.c[column], DIALECT)


def _bind(rows: list[tuple[Table, Any]], processor: Callable[[Table, str], Any]) -> list[Any]:
    values: list[Any] = []
    for table, record in rows:
        row = to_row(record)
        for name, value in row.items():
            process = processor(table, name)
            values.append(value if process is None else process(value))
    return values


def _per_item_us(
    make: Callable[[], list[tuple[Table, Any]]],
    processor: Callable[[Table, str], Any],
    batches: int,
) -> float:
    # Processors are looked up once per column, as the inserts cache them.
    cache: dict[tuple[str, str], Any] = {}

    def cached(table: Table, column: str) -> Any:
        key = (table.name, column)
        if key not in cache:
            cache[key] = processor(table, column)
        return cache[key]

    work = [[row for _ in range(BATCH) for row in make()] for _ in range(batches)]
    started = time.perf_counter()
    for rows in work:
        _bind(rows, cached)
    return (time.perf_counter() - started) * 1e6 / (batches * BATCH)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    kinds = {"response_with_items": _response, "replay_record": _replay}
    ways = {"core": _core, "short": _short}
    times: dict[str, dict[str, list[float]]] = {k: {w: [] for w in ways} for k in kinds}
    for r in range(args.rounds):
        for kind, make in kinds.items():
            order = list(ways) if r % 2 == 0 else list(reversed(ways))
            for way in order:
                times[kind][way].append(_per_item_us(make, ways[way], args.batches))
    figures: dict[str, Any] = {}
    for kind, by_way in times.items():
        core = statistics.median(by_way["core"])
        short = statistics.median(by_way["short"])
        figures[kind] = {
            "core_us": round(core, 2),
            "short_us": round(short, 2),
            "short_over_core": round(short / core, 3),
        }
    print(json.dumps({"benchmark": "sqlite_binds", "batch": BATCH, **vars(args), **figures}))


if __name__ == "__main__":
    main()
