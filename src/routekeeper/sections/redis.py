"""``redis``: the optional Redis server replicas share live fan-out through."""

from __future__ import annotations

from pydantic import Field

from routekeeper.sections.base import Section


class RedisSettings(Section):
    url: str | None = Field(
        None,
        description="`redis://host:port/db`: job events committed on one replica reach SSE "
        "readers on the others through pub/sub (readers then read the table). None: readers "
        "wake on PostgreSQL LISTEN/NOTIFY or poll the table.",
    )
