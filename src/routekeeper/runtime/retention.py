"""Retention of every surface that declares it (``Surface.retention``): its bounds are read
from the settings the declaration names, and its store deletes in batches."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from routekeeper.contract import SURFACES
from routekeeper.settings import Settings
from routekeeper.storage.state import StateStorage
from routekeeper.storage.surface_store import PRUNE_BATCH, RetentionPolicy
from routekeeper.storage.types import utcnow


def setting_value(settings: Settings, path: str) -> Any:
    """The value of a dotted settings path (``replay.retention_days``)."""
    value: Any = settings
    for part in path.split("."):
        value = getattr(value, part)
    return value


def retention_policy(settings: Settings, surface: str) -> RetentionPolicy | None:
    retention = SURFACES[surface].retention
    if retention is None:
        return None
    days = setting_value(settings, retention.max_age_days) if retention.max_age_days else None
    count = setting_value(settings, retention.max_count) if retention.max_count else None
    return RetentionPolicy(
        max_age=timedelta(days=days) if days is not None else None, max_count=count
    )


async def apply_retention(
    storage: StateStorage, settings: Settings, *, batch_size: int = PRUNE_BATCH
) -> dict[str, int]:
    """Prune every surface with retention, batch after batch; returns rows removed by
    surface."""
    now = utcnow()
    removed: dict[str, int] = {}
    for surface in SURFACES:
        policy = retention_policy(settings, surface)
        if policy is None:
            continue
        store = storage.store_for(surface)
        total = 0
        while True:
            n = await store.prune(surface, policy, batch_size=batch_size, now=now)
            total += n
            if n < batch_size:
                break
        removed[surface] = total
    return removed
