"""The one store shape every surface's store extends.

A store serves one surface, or a few colocated ones (they commit in one transaction, so they
share a backend). It declares which tables hold each surface, and how each surface's rows age
out; this class gives it, once for all: getting one record (NotFound), keyset pages with typed
filters, row counts, batched pruning, and lifecycle transitions (lock the row, check the move,
update, append the event, in one transaction). Recovery steps are the store's own
(``recovery_steps``), run by ``storage.recovery``."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

from sqlalchemy import ColumnElement, Select, Table, delete, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from routekeeper.contract.errors import NotFound
from routekeeper.contract.lifecycle import Lifecycle, S
from routekeeper.contract.pages import Page, SortOrder
from routekeeper.storage.database import Database
from routekeeper.storage.dialect import Dialect
from routekeeper.storage.pagination import keyset_page
from routekeeper.storage.types import utcnow

if TYPE_CHECKING:
    from routekeeper.storage.recovery import RecoveryStep

T = TypeVar("T")

PRUNE_BATCH = 1000


class Filters(Protocol):
    """Typed list filters: a dataclass whose ``apply`` adds its WHERE clauses."""

    def apply(self, query: Any, dialect: Dialect) -> Any: ...


@dataclass(frozen=True)
class RetentionRule:
    """How rows of one table age out: older than the policy's age by ``age_column``, or
    beyond the newest ``max_count`` by ``key_column``; only rows whose ``state_column`` is in
    ``states`` are eligible when it is given (e.g. finished replicas)."""

    table: Table
    age_column: str
    key_column: str = "id"
    state_column: str | None = None
    states: frozenset[str] = frozenset()


@dataclass(frozen=True)
class RetentionPolicy:
    """The bounds the settings give a surface (see ``Surface.retention``)."""

    max_age: timedelta | None = None
    max_count: int | None = None


class SurfaceStore:
    tables: ClassVar[Mapping[str, tuple[Table, ...]]]
    """Surface name -> the tables that hold it (the first surface names the backend)."""
    records: ClassVar[Mapping[str, type[Any]]]
    """Table name -> the contract record (a frozen dataclass) one of its rows is."""
    lifecycle_columns: ClassVar[Mapping[str, str]] = {}
    """Surface name -> the column that holds its records' lifecycle state (every surface
    that declares a ``lifecycle``)."""
    retention: ClassVar[Mapping[str, RetentionRule]] = {}
    """Surface name -> how its rows age out (every surface that declares ``retention``)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @classmethod
    def surfaces(cls) -> tuple[str, ...]:
        return tuple(cls.tables)

    def recovery_steps(self) -> Sequence[RecoveryStep]:
        """What startup does about what a crash left behind, per surface (none by default)."""
        return ()

    # -- reads -----------------------------------------------------------------------------

    async def _one(
        self,
        table: Table,
        key: str | int,
        to_record: Callable[[Any], T],
        what: str,
        *,
        upkeep: bool = False,
        where: ColumnElement[bool] | None = None,
    ) -> T:
        """The record whose primary key is ``key`` (and that ``where`` admits, e.g. its
        tenant), or NotFound naming ``what``."""
        query = select(table).where(_key(table) == key)
        if where is not None:
            query = query.where(where)
        async with self.db.read(upkeep=upkeep) as conn:
            row = (await conn.execute(query)).one_or_none()
        if row is None:
            raise NotFound(f"no {what} {key}")
        return to_record(row)

    async def _page(
        self,
        query: Select[Any],
        key: ColumnElement[Any],
        to_record: Callable[[Any], T],
        *,
        limit: int,
        order: SortOrder,
        after: str | int | None,
        before: str | int | None,
        upkeep: bool = False,
    ) -> Page[T]:
        """One keyset page of ``query`` by its unique ``key`` (cursors are key values)."""
        name = str(key.key)
        async with self.db.read(upkeep=upkeep) as conn:
            return await keyset_page(
                conn,
                query,
                key,
                to_record,
                lambda record: getattr(record, name),
                limit=limit,
                order=order,
                after=after,
                before=before,
            )

    async def count_rows(self, surface: str) -> int:
        """Rows in the surface's tables."""
        total = 0
        for table in self.tables[surface]:
            total += await self.db.count_rows(table)
        return total

    # -- retention -------------------------------------------------------------------------

    async def prune(
        self,
        surface: str,
        policy: RetentionPolicy,
        *,
        batch_size: int = PRUNE_BATCH,
        now: datetime | None = None,
    ) -> int:
        """Delete up to ``batch_size`` rows of ``surface`` that the policy lets go; returns
        how many. Call again while it returns a full batch."""
        rule = self.retention.get(surface)
        if rule is None or (policy.max_age is None and policy.max_count is None):
            return 0
        c = rule.table.c
        key = c[rule.key_column]
        eligible = c[rule.state_column].in_(sorted(rule.states)) if rule.state_column else None
        async with self.db.write() as conn:
            conditions = []
            if policy.max_age is not None:
                conditions.append(c[rule.age_column] < (now or utcnow()) - policy.max_age)
            if policy.max_count is not None:
                newest = select(key).order_by(key.desc()).offset(policy.max_count).limit(1)
                if eligible is not None:
                    newest = newest.where(eligible)
                boundary = (await conn.execute(newest)).scalar_one_or_none()
                if boundary is not None:
                    conditions.append(key <= boundary)
            if not conditions:
                return 0
            doomed = select(key).where(_any(conditions)).order_by(key).limit(batch_size)
            if eligible is not None:
                doomed = doomed.where(eligible)
            ids = [row[0] for row in await conn.execute(doomed)]
            if ids:
                await conn.execute(delete(rule.table).where(key.in_(ids)))
        return len(ids)

    # -- lifecycle -------------------------------------------------------------------------

    async def _transition(
        self,
        conn: AsyncConnection,
        table: Table,
        record_id: str,
        lifecycle: Lifecycle[S],
        to_state: S,
        *,
        state_column: str,
        values: Mapping[str, Any],
        event: Callable[[S], tuple[Table, Mapping[str, Any]]] | None,
        what: str,
    ) -> tuple[S, Any]:
        """:meth:`_transition_in` inside a transaction of ``Database.write()``."""
        return await conn.run_sync(
            lambda sync: self._transition_in(
                sync,
                table,
                record_id,
                lifecycle,
                to_state,
                state_column=state_column,
                values=values,
                event=event,
                what=what,
            )
        )

    def _transition_in(
        self,
        conn: Connection,
        table: Table,
        record_id: str,
        lifecycle: Lifecycle[S],
        to_state: S,
        *,
        state_column: str,
        values: Mapping[str, Any],
        event: Callable[[S], tuple[Table, Mapping[str, Any]]] | None,
        what: str,
    ) -> tuple[S, Any]:
        """Inside a write transaction: lock the record's row, check the move against the
        lifecycle (NotFound, InvalidTransition), update it with ``values`` and the new state,
        append the event ``event(from_state)`` returns (an events table and its row).
        Returns the state it left and the updated row."""
        key = _key(table)
        query = self.db.dialect.for_update(select(table).where(key == record_id))
        row = conn.execute(query).one_or_none()
        if row is None:
            raise NotFound(f"no {what} {record_id}")
        current = lifecycle.states(getattr(row, state_column))
        lifecycle.check(record_id, current, to_state)
        conn.execute(
            update(table).where(key == record_id).values({state_column: to_state.value, **values})
        )
        if event is not None:
            events, event_row = event(current)
            conn.execute(insert(events).values(**event_row))
        updated = conn.execute(select(table).where(key == record_id)).one()
        return current, updated


def _key(table: Table) -> ColumnElement[Any]:
    (column,) = table.primary_key.columns
    return column


def _any(conditions: list[ColumnElement[bool]]) -> ColumnElement[bool]:
    combined = conditions[0]
    for condition in conditions[1:]:
        combined = combined | condition
    return combined
