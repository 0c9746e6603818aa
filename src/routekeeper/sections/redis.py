"""``redis``: the one Redis setting, optional. Each feature says what it does without it."""

from __future__ import annotations

from pydantic import Field, field_validator

from routekeeper.sections.base import Section


class RedisSettings(Section):
    url: str | None = Field(
        None,
        description="`redis://host:port/db`, optional. With it: a revocation reaches every "
        "replica at once, rate limits hold across replicas on several machines, and job "
        "events committed on one replica reach SSE readers on the others through pub/sub. "
        "Without it: replicas re-read keys after `auth.cache_seconds`, each replica of "
        "`state.mode: shared` counts rate limits alone, and job readers wake on PostgreSQL "
        "LISTEN/NOTIFY or poll the table.",
    )

    @field_validator("url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(REDIS_SCHEMES):
            raise ValueError(f"must start with {', '.join(REDIS_SCHEMES)}")
        return value


REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
