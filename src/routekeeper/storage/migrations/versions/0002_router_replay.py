"""router_replay

Revision ID: 0002_router_replay
Revises: 0001_runtime
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_router_replay"
down_revision = "0001_runtime"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "router_replay",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("replica_id", sa.String(40), nullable=False),
        sa.Column("endpoint", sa.String(64), nullable=False),
        sa.Column("session_id", sa.String(256), nullable=True),
        sa.Column("decision", sa.String(128), nullable=True),
        sa.Column("signals", sa.JSON(), nullable=False),
        sa.Column("requested_model", sa.String(256), nullable=False),
        sa.Column("selected_model", sa.String(128), nullable=True),
        sa.Column("stream", sa.Boolean(), nullable=False),
        sa.Column("upstream_status", sa.Integer(), nullable=True),
        sa.Column("lifecycle_state", sa.String(16), nullable=False),
        sa.Column("terminal_reason", sa.String(32), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("routing_ms", sa.Float(), nullable=True),
        sa.Column("ttfb_ms", sa.Float(), nullable=True),
        sa.Column("total_ms", sa.Float(), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=True),
        sa.Column("completion_tokens", sa.Integer(), nullable=True),
        sa.Column("total_tokens", sa.Integer(), nullable=True),
        sa.Column("cost", sa.Float(), nullable=True),
        sa.Column("currency", sa.String(8), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("request_body", sa.Text(), nullable=True),
        sa.Column("request_body_truncated", sa.Boolean(), nullable=False),
        sa.Column("response_body", sa.Text(), nullable=True),
        sa.Column("response_body_truncated", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_router_replay"),
    )
    for columns in (
        ["tenant_id", "id"],
        ["decision", "id"],
        ["selected_model", "id"],
        ["lifecycle_state", "id"],
        ["session_id", "id"],
    ):
        op.create_index(f"ix_router_replay_{'_'.join(columns)}", "router_replay", columns)
    op.create_index("ix_router_replay_started_at", "router_replay", ["started_at"])
    op.create_index(
        "ix_router_replay_in_progress",
        "router_replay",
        ["replica_id"],
        postgresql_where=sa.text("lifecycle_state = 'in_progress'"),
        sqlite_where=sa.text("lifecycle_state = 'in_progress'"),
    )


def downgrade() -> None:
    op.drop_table("router_replay")
