"""The opened storage of one process: a Database per backend that some surface uses, and the
stores built on them."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TypeVar

from routekeeper.contract import SURFACES
from routekeeper.contract.errors import StorageError
from routekeeper.storage.config import SQLiteBackend, StorageConfig
from routekeeper.storage.database import Database
from routekeeper.storage.liveness import liveness_for
from routekeeper.storage.migrate import MigrationState, ensure_schema
from routekeeper.storage.placement import SurfacePlacement, check_contract
from routekeeper.storage.replay_store import ReplayStore
from routekeeper.storage.runtime_store import RuntimeStore
from routekeeper.storage.stores import STORES
from routekeeper.storage.surface_store import SurfaceStore

log = logging.getLogger(__name__)

StoreT = TypeVar("StoreT", bound=SurfaceStore)


@dataclass
class SurfaceCount:
    placement: SurfacePlacement
    rows: int | None
    error: str | None = None


class StateStorage:
    """Opens the backends the contract placed surfaces on; ``close()`` releases them."""

    def __init__(self, settings: StorageConfig) -> None:
        self.settings = settings
        self.placements = check_contract(settings)
        self.databases: dict[str, Database] = {}
        for placement in self.placements:
            name = placement.backend
            if name in self.databases:
                continue
            backend = settings.state.backends[name]
            path = (
                settings.resolve_path(backend.path) if isinstance(backend, SQLiteBackend) else None
            )
            self.databases[name] = Database(name, backend, sqlite_path=path)
        # One store per entry of the store list, on the backend of its (first) surface:
        # colocated surfaces share one by contract.
        self.stores: list[SurfaceStore] = [
            cls(self.database_for(cls.surfaces()[0])) for cls in STORES
        ]
        self._by_surface = {name: store for store in self.stores for name in store.surfaces()}
        self._by_type = {type(store): store for store in self.stores}
        self.liveness = liveness_for(self.database_for("runtime_status"), settings.workspace)

    def store(self, cls: type[StoreT]) -> StoreT:
        """The opened store of that class."""
        store = self._by_type[cls]
        assert isinstance(store, cls)
        return store

    def store_for(self, surface: str) -> SurfaceStore:
        return self._by_surface[surface]

    @property
    def runtime(self) -> RuntimeStore:
        """Replicas and their events: what every replica's own upkeep reads and writes."""
        return self.store(RuntimeStore)

    @property
    def replay(self) -> ReplayStore:
        return self.store(ReplayStore)

    def database_for(self, surface: str) -> Database:
        if surface not in SURFACES:
            raise KeyError(f"unknown surface {surface!r}")
        return self.databases[self.settings.state.backend_name_for(surface)]

    async def open(self) -> None:
        try:
            for db in self.databases.values():
                await db.open()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        for db in self.databases.values():
            try:
                await db.close()
            except Exception:  # closing must release every backend even if one fails
                log.exception("closing backend %s failed", db.name)

    async def migrate(self) -> list[MigrationState]:
        """Bring every backend in use to the code's schema (or refuse, see ensure_schema)."""
        return [
            await ensure_schema(db, auto_migrate=self.settings.state.auto_migrate)
            for db in self.databases.values()
        ]

    async def count_surface_rows(self) -> list[SurfaceCount]:
        counts = []
        for placement in self.placements:
            try:
                rows = await self.store_for(placement.surface.name).count_rows(
                    placement.surface.name
                )
                counts.append(SurfaceCount(placement, rows))
            except StorageError as exc:  # status must still render when one backend is down
                counts.append(SurfaceCount(placement, None, str(exc)))
        return counts
