"""The table of the ``evaluation_results`` surface: one row per item of an evaluation job."""

from __future__ import annotations

from sqlalchemy import Boolean, Column, Float, ForeignKey, Index, Table

from routekeeper.storage.schema import metadata
from routekeeper.storage.types import BoundedInteger, ClientString, ClientText, UTCDateTime

evaluation_results = Table(
    "evaluation_results",
    metadata,
    # The key is the item: a resumed attempt upserts the items it routes again.
    Column(
        "job_id",
        ClientString(40),
        ForeignKey("jobs.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("item_index", BoundedInteger, primary_key=True, autoincrement=False),
    Column("tenant_id", ClientString(64), nullable=False),
    Column("attempt", BoundedInteger, nullable=False),
    Column("valid", Boolean, nullable=False),
    Column("correct", Boolean, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    # Client text: checked at submit in characters (NUL included), unbounded as stored.
    Column("expected_decision", ClientText, nullable=True),
    Column("expected_model", ClientText, nullable=True),
    Column("decision", ClientString(256), nullable=True),
    Column("model", ClientString(256), nullable=True),
    Column("decision_correct", Boolean, nullable=True),
    Column("model_correct", Boolean, nullable=True),
    Column("routing_ms", Float, nullable=True),
    Column("error", ClientText, nullable=True),
    Column("sent_to_model", Boolean, nullable=False),
    Column("upstream_ms", Float, nullable=True),
    Column("upstream_error", ClientText, nullable=True),
    # Results list filtered by verdict, by item.
    Index("ix_evaluation_results_job_id_correct_item_index", "job_id", "correct", "item_index"),
)
