"""runtime_status and runtime_events

Revision ID: 0001_runtime
Revises:
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_runtime"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runtime_replicas",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("phase", sa.String(20), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("listen", sa.String(255), nullable=True),
        sa.Column("version", sa.String(40), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_runtime_replicas"),
    )
    op.create_index("ix_runtime_replicas_phase", "runtime_replicas", ["phase"])
    op.create_table(
        "runtime_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("replica_id", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(60), nullable=False),
        sa.Column("from_phase", sa.String(20), nullable=True),
        sa.Column("to_phase", sa.String(20), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_runtime_events"),
    )
    op.create_index("ix_runtime_events_replica_id_id", "runtime_events", ["replica_id", "id"])
    op.create_index("ix_runtime_events_occurred_at", "runtime_events", ["occurred_at"])


def downgrade() -> None:
    op.drop_table("runtime_events")
    op.drop_table("runtime_replicas")
