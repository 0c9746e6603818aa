"""The store list: every surface store, in registry order. ``StateStorage`` builds one of each
on the backend its surfaces are placed on; the table list of each surface, and the whole
declared schema, are derived from it."""

from __future__ import annotations

from sqlalchemy import MetaData, Table

from routekeeper.storage.conversations_store import ConversationsStore
from routekeeper.storage.evaluation_store import EvaluationStore
from routekeeper.storage.jobs_store import JobsStore
from routekeeper.storage.keys_store import ApiKeysStore
from routekeeper.storage.replay_store import ReplayStore
from routekeeper.storage.responses_store import ResponsesStore
from routekeeper.storage.runtime_store import RuntimeStore
from routekeeper.storage.schema import metadata
from routekeeper.storage.surface_store import SurfaceStore

STORES: tuple[type[SurfaceStore], ...] = (
    RuntimeStore,
    ReplayStore,
    ResponsesStore,
    ConversationsStore,
    ApiKeysStore,
    JobsStore,
    EvaluationStore,
)


def surface_tables() -> dict[str, tuple[Table, ...]]:
    """Surface name -> the tables that hold it, from every store."""
    return {name: tables for store in STORES for name, tables in store.tables.items()}


def declared_metadata() -> MetaData:
    """The whole declared schema (every store's schema module is imported above)."""
    return metadata
