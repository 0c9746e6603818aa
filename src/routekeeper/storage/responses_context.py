"""A turn's context: the items of a response and of every response it continues, oldest turn
first. Read from the database in one recursive statement whatever the chain's depth, or taken
from a bounded per-replica memo of finished responses' items (:class:`ContextMemo`) and then
checked by one statement that walks the same chain without its items.

The memo is working memory of one replica, never a copy of record: it holds items this replica
committed (a response it finished) or read (a chain of finished responses), and every use of
it is checked against the database first. That check walks the chain the way the full read
does (each response visible: same tenant, not expired) and counts the responses it reaches;
fewer than the memo holds means a link was deleted (on any replica) or has expired, and the
full read then names it (the 404). A finished response's items never change (they are
inserted with its start and its finish and deleted only with it, and ids are never reused),
so a chain whose every response is there has exactly the items the memo holds."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, literal, select
from sqlalchemy.engine import Connection

from routekeeper.contract.errors import NotFound
from routekeeper.contract.responses import ItemKind, ResponseItemRecord, ResponseStatus
from routekeeper.storage.database import Database
from routekeeper.storage.schema.responses import response_items, responses

# The memo's bounds: this many responses, holding this many items in all (about 2 items, a
# message in and one out, per turn of a conversation). The oldest used is dropped first.
MEMO_RESPONSES = 4096
MEMO_ITEMS = 32768


# What a caller makes of a turn's items (e.g. chat messages): a pure function of them.
Convert = Callable[[Sequence[ResponseItemRecord]], list[Any]]


@dataclass(frozen=True)
class Turn:
    """One finished response's place in a chain and its items, in position order; ``made``
    keeps what each :data:`Convert` made of them (computed once, dropped with the turn)."""

    response_id: str
    previous_response_id: str | None
    tenant_id: str
    items: tuple[ResponseItemRecord, ...]
    made: dict[Convert, list[Any]] = field(default_factory=dict, compare=False, repr=False)

    def converted(self, convert: Convert) -> list[Any]:
        made = self.made.get(convert)
        if made is None:
            made = self.made[convert] = convert(self.items)
        return made


class ContextMemo:
    """Finished responses' turns by id, least recently used dropped first (bounded by
    :data:`MEMO_RESPONSES` turns and :data:`MEMO_ITEMS` items)."""

    def __init__(self, *, max_responses: int = MEMO_RESPONSES, max_items: int = MEMO_ITEMS):
        self.max_responses = max_responses
        self.max_items = max_items
        self._turns: OrderedDict[str, Turn] = OrderedDict()
        self._items = 0

    def __len__(self) -> int:
        return len(self._turns)

    def __contains__(self, response_id: object) -> bool:
        return response_id in self._turns

    def chain(self, response_id: str, tenant_id: str) -> list[Turn] | None:
        """The turns from ``response_id`` back to the chain's first response (newest first),
        or None unless the memo holds every one of them."""
        turns: list[Turn] = []
        at: str | None = response_id
        while at is not None:
            turn = self._turns.get(at)
            if turn is None or turn.tenant_id != tenant_id:
                return None
            turns.append(turn)
            at = turn.previous_response_id
        for turn in reversed(turns):  # used: the tip is the last to go
            self._turns.move_to_end(turn.response_id)
        return turns

    async def context(
        self,
        db: Database,
        response_id: str,
        convert: Convert,
        *,
        tenant_id: str,
        not_before: datetime,
    ) -> list[Any]:
        """The chain's items, oldest turn first, as ``convert`` makes them turn by turn, in
        one statement on ``db`` whatever the depth: as the memo holds them (each turn converted
        once) when the walk (:func:`chain_length`) reaches every response of the chain, else
        read with it (:func:`read_chain`; a chain of finished responses is remembered).
        NotFound naming the first response of the chain that is missing."""
        turns = self.chain(response_id, tenant_id)

        def read(conn: Connection) -> tuple[list[ResponseItemRecord], list[Turn] | None] | None:
            if turns is not None:
                reached = chain_length(
                    conn, response_id, tenant_id=tenant_id, not_before=not_before
                )
                if reached == len(turns):
                    return None  # every response of the chain is there: the memo has its items
            return read_chain(conn, response_id, tenant_id=tenant_id, not_before=not_before)

        try:
            found = await db.run_read(read)
        except NotFound:
            self.forget(response_id)
            raise
        if found is None:
            assert turns is not None
            return converted(turns, convert)
        items, finished = found
        if finished is None:
            return convert(items)
        for turn in reversed(finished):
            self.add(turn)
        return converted(finished, convert)

    def add(self, turn: Turn) -> None:
        if len(turn.items) > self.max_items:
            return
        old = self._turns.pop(turn.response_id, None)
        if old is not None:
            self._items -= len(old.items)
        self._turns[turn.response_id] = turn
        self._items += len(turn.items)
        while len(self._turns) > self.max_responses or self._items > self.max_items:
            _, dropped = self._turns.popitem(last=False)
            self._items -= len(dropped.items)

    def finished(
        self,
        response_id: str,
        previous_response_id: str | None,
        tenant_id: str,
        items: Sequence[ResponseItemRecord],
    ) -> None:
        """A response this replica finished (committed): remembered when the memo can give
        its whole chain (it starts one, or its previous response is there)."""
        if previous_response_id is None or previous_response_id in self._turns:
            ordered = tuple(sorted(items, key=lambda i: i.position))
            self.add(Turn(response_id, previous_response_id, tenant_id, ordered))

    def forget(self, response_id: str) -> None:
        turn = self._turns.pop(response_id, None)
        if turn is not None:
            self._items -= len(turn.items)


def _walk() -> Any:
    """The recursive walk up ``previous_response_id`` from the response ``:response_id`` over
    visible responses (tenant ``:tenant_id``, created at or after ``:not_before``): id,
    previous id, status and depth (0: the tip)."""
    c = responses.c
    visible = (c.tenant_id == bindparam("tenant_id")) & (c.created_at >= bindparam("not_before"))
    walk = (
        select(c.id, c.previous_response_id, c.status, literal(0).label("depth"))
        .where(c.id == bindparam("response_id"))
        .where(visible)
        .cte("chain", recursive=True)
    )
    return walk.union_all(
        select(c.id, c.previous_response_id, c.status, (walk.c.depth + 1).label("depth"))
        .join(walk, c.id == walk.c.previous_response_id)
        .where(visible)
    )


# Built once: executing the same statement objects skips building them and their cache keys.
_WALK = _walk()
CHAIN_LENGTH = select(func.count()).select_from(_WALK)
CHAIN_ITEMS = (
    select(
        _WALK.c.id.label("chain_id"),
        _WALK.c.previous_response_id.label("chain_previous"),
        _WALK.c.status.label("chain_status"),
        _WALK.c.depth.label("chain_depth"),
        response_items.c.id,
        response_items.c.response_id,
        response_items.c.position,
        response_items.c.kind,
        response_items.c.data,
        response_items.c.tenant_id,
    )
    .select_from(_WALK.outerjoin(response_items, response_items.c.response_id == _WALK.c.id))
    .order_by(_WALK.c.depth.desc(), response_items.c.position)
)


def chain_length(
    conn: Connection, response_id: str, *, tenant_id: str, not_before: datetime
) -> int:
    """How many responses the walk from ``response_id`` reaches (one statement, no items)."""
    params = {"response_id": response_id, "tenant_id": tenant_id, "not_before": not_before}
    return int(conn.execute(CHAIN_LENGTH, params).scalar_one())


def read_chain(
    conn: Connection, response_id: str, *, tenant_id: str, not_before: datetime
) -> tuple[list[ResponseItemRecord], list[Turn] | None]:
    """Every item of the chain ending at ``response_id``, oldest turn first, in one statement;
    with the chain's turns (newest first) when every response of it is finished (None while
    one is in progress: its items may still grow). NotFound naming the first response of the
    chain that is missing (never stored, deleted, or expired)."""
    params = {"response_id": response_id, "tenant_id": tenant_id, "not_before": not_before}
    rows = conn.execute(CHAIN_ITEMS, params).all()
    if not rows:
        raise NotFound(f"Previous response with id '{response_id}' not found.")
    oldest = rows[0]
    if oldest.chain_previous is not None:
        raise NotFound(
            f"Previous response with id '{oldest.chain_previous}' not found "
            f"(response '{response_id}' continues it)."
        )
    items: list[ResponseItemRecord] = []
    chain: list[tuple[str, str | None, list[ResponseItemRecord]]] = []  # oldest first
    finished = True
    for row in rows:
        if not chain or chain[-1][0] != row.chain_id:
            finished = finished and row.chain_status != ResponseStatus.IN_PROGRESS.value
            chain.append((row.chain_id, row.chain_previous, []))
        if row.id is None:  # a response without items
            continue
        item = ResponseItemRecord(
            id=row.id,
            response_id=row.response_id,
            position=row.position,
            kind=ItemKind(row.kind),
            data=row.data,
            tenant_id=row.tenant_id,
        )
        items.append(item)
        chain[-1][2].append(item)
    if not finished:
        return items, None
    return items, [Turn(r, p, tenant_id, tuple(own)) for r, p, own in reversed(chain)]


def converted(turns: Sequence[Turn], convert: Convert) -> list[Any]:
    """What ``convert`` makes of the items of ``turns`` (newest first, as
    :meth:`ContextMemo.chain` gives them), oldest turn first."""
    made: list[Any] = []
    for turn in reversed(turns):
        made += turn.converted(convert)
    return made
