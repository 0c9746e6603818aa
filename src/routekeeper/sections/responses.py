"""``responses``: the responses surface's settings."""

from __future__ import annotations

from pydantic import Field

from routekeeper.sections.base import Section


class ResponsesSettings(Section):
    retention_days: int = Field(
        30,
        ge=1,
        le=3650,
        description="Stored responses (and their items) older than this are gone: a 404 at "
        "once, deleted in batches by retention.",
    )
