"""``auth``: API keys and tenants."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from routekeeper.sections.base import Section


class AuthSettings(Section):
    mode: Literal["none", "api_key"] = Field(
        "none",
        description="`none`: no keys, everything belongs to tenant `default` and every route "
        "is open (the local default). `api_key`: every `/v1` call needs `Authorization: "
        "Bearer <key>`, `/api` needs an admin key; `/livez` and `/readyz` stay open.",
    )
    metrics: Literal["open", "admin"] = Field(
        "open", description="Who may read `/metrics` in `api_key` mode: anyone, or admin keys."
    )
    cache_seconds: float = Field(
        2.0,
        gt=0,
        le=5,
        description="How long a replica trusts a key it has checked before reading it again "
        "(so a revocation on another replica reaches this one within this time, plus one "
        "read; with `redis.url` set, at once).",
    )
    cache_size: int = Field(
        10_000,
        ge=100,
        le=10_000_000,
        description="Known keys a replica caches; secrets that match no key are cached "
        "apart, a tenth as many, so made-up secrets never push known keys out.",
    )
    offline_grace_seconds: float = Field(
        300.0,
        ge=0,
        le=86_400,
        description="While the database cannot be read, a key this replica checked within "
        "this many seconds keeps working; after it, and for keys it never saw, requests are "
        "answered 503 `storage_unavailable`.",
    )
    audit_retention_days: int = Field(
        365, ge=1, le=36_500, description="Audit events older than this are deleted."
    )
