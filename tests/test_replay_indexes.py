"""100k replay records of 5 tenants, ANALYZE, then every list filter, alone and with
``tenant=``, at page 1 and at page 1,000 must read through an index, never a full scan of
router_replay (both dialects)."""

import dataclasses
import json
import re
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from routekeeper.contract.ids import new_id
from routekeeper.contract.pages import SortOrder
from routekeeper.contract.replay import LifecycleState, ReplayRecord
from routekeeper.storage.pagination import keyset_query
from routekeeper.storage.replay_store import ReplayFilters, summary_query
from routekeeper.storage.schema.replay import router_replay

pytestmark = pytest.mark.slow
N = 100_000
PAGE = 20
T0 = datetime(2026, 1, 1, tzinfo=UTC)
STATES = [LifecycleState.COMPLETED] * 17 + [
    LifecycleState.FAILED,
    LifecycleState.ABORTED,
    LifecycleState.IN_PROGRESS,
]


def make(i: int) -> ReplayRecord:
    return ReplayRecord(
        id=new_id("rpl", now_ms=1_760_000_000_000 + i),
        tenant_id=f"tenant_{i % 5}",
        request_id=f"req_{i}",
        replica_id=f"rep_{i % 7}",
        endpoint="/v1/chat/completions",
        started_at=T0 + timedelta(seconds=i),
        requested_model="auto",
        selected_model=f"model_{i % 13}",
        decision=f"decision_{i % 11}",
        stream=bool(i % 2),
        session_id=f"session_{i % 997}",
        lifecycle_state=STATES[i % len(STATES)],
        total_ms=float(i % 1000),
        prompt_text=f"the user asks about topic{i % 100} today" if i % 10 == 0 else None,
    )


ALONE = {
    "none": ReplayFilters(),
    "decision": ReplayFilters(decision="decision_3"),
    "model": ReplayFilters(model="model_5"),
    "lifecycle_state": ReplayFilters(lifecycle_state=LifecycleState.FAILED),
    "session_id": ReplayFilters(session_id="session_42"),
    "since_until": ReplayFilters(since=T0 + timedelta(hours=5), until=T0 + timedelta(hours=20)),
    "q": ReplayFilters(q="topic70"),
}
# Every filter again as one tenant's key (or an admin's tenant=) asks for it.
FILTERS = {
    **ALONE,
    **{
        f"{name}+tenant": dataclasses.replace(filters, tenant_id="tenant_3")
        for name, filters in ALONE.items()
    },
}


# SQLite's planner is deterministic here: each filter walks its own (column, id, tenant_id)
# index, with tenant= too (the tenant is checked in the index); no filter walks the primary
# key, one tenant alone its (tenant_id, id) index. (On
# PostgreSQL the planner may prefer walking the primary key backwards from the cursor, which
# reads about limit / selectivity rows; either way no sequential scan.)
SQLITE_INDEX = {
    "none": "sqlite_autoindex_router_replay_1",  # the primary key's index, in id order
    "decision": "ix_router_replay_decision_id_tenant_id",
    "model": "ix_router_replay_selected_model_id_tenant_id",
    "lifecycle_state": "ix_router_replay_lifecycle_state_id_tenant_id",
    "session_id": "ix_router_replay_session_id_id_tenant_id",
    "since_until": "ix_router_replay_started_at",
    "q": "fts5+rowid",
    "none+tenant": "ix_router_replay_tenant_id_id",
    "decision+tenant": "ix_router_replay_decision_id_tenant_id",
    "model+tenant": "ix_router_replay_selected_model_id_tenant_id",
    # one tenant in five is more selective here than one state in twenty
    "lifecycle_state+tenant": "ix_router_replay_tenant_id_id",
    "session_id+tenant": "ix_router_replay_session_id_id_tenant_id",
    "since_until+tenant": "ix_router_replay_started_at",
    "q+tenant": "fts5+rowid",
}


async def plan_of(conn, dialect, query) -> str:
    compiled = query.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
    if not dialect.postgres:
        rows = await conn.execute(text(f"EXPLAIN QUERY PLAN {compiled}"))
        return "\n".join(r[-1] for r in rows)
    rows = await conn.execute(text(f"EXPLAIN (FORMAT JSON) {compiled}"))
    return json.dumps(rows.scalar_one())


def full_scan(dialect, plan: str) -> bool:
    if not dialect.postgres:
        return any(
            re.match(r"\s*SCAN router_replay( |$)", line) and "USING" not in line
            for line in plan.splitlines()
        )
    return '"Node Type": "Seq Scan"' in plan


async def test_every_filter_uses_an_index_at_page_1_and_1000(state_storage):
    store = state_storage.replay
    db = store.db
    started = time.monotonic()
    for start in range(0, N, 10_000):
        await store.write_batch([make(i) for i in range(start, start + 10_000)], [])
    load_seconds = time.monotonic() - started
    async with db.write() as conn:
        await conn.execute(text("ANALYZE"))
    problems = []
    async with db.read() as conn:
        for name, filters in FILTERS.items():
            query = summary_query(filters, db.dialect)
            # page 1000's cursor: the id that ends page 999, found the way a client would
            ids = (
                (
                    await conn.execute(
                        keyset_query(
                            query.with_only_columns(router_replay.c.id),
                            router_replay.c.id,
                            limit=100,
                            order=SortOrder.DESC,
                        )
                        .limit(None)
                        .offset(PAGE * 999 - 1)
                        .limit(1)
                    )
                )
                .scalars()
                .all()
            )
            cursors = {"page 1": None, "page 1000": ids[0] if ids else None}
            for page, after in cursors.items():
                paged = keyset_query(
                    query, router_replay.c.id, limit=PAGE, order=SortOrder.DESC, after=after
                )
                plan = await plan_of(conn, db.dialect, paged)
                used = [
                    w
                    for w in plan.replace('"', " ").split()
                    if w.startswith(("ix_", "pk_", "sqlite_autoindex_"))
                ]
                if "USING INTEGER PRIMARY KEY" in plan and "VIRTUAL TABLE INDEX" in plan:
                    used.append("fts5+rowid")  # full-text hits, then rows by rowid
                if full_scan(db.dialect, plan) or not used:
                    problems.append(f"{name} {page}: {plan}")
                elif not db.dialect.postgres and SQLITE_INDEX[name] not in used:
                    problems.append(f"{name} {page}: uses {used}, not {SQLITE_INDEX[name]}")
                print(f"{db.dialect.name} {name} {page}: {used}")
    print(f"{db.dialect.name}: loaded {N} records in {load_seconds:.1f}s")
    assert problems == []
