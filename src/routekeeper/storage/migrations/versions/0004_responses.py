"""responses and response_items; router_replay.response_id

Revision ID: 0004_responses
Revises: 0003_replay_search
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_responses"
down_revision = "0003_replay_search"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "responses",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("replica_id", sa.String(40), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("selected_model", sa.String(128), nullable=True),
        sa.Column("previous_response_id", sa.String(40), nullable=True),
        sa.Column("replay_id", sa.String(40), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("usage", sa.JSON(), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("incomplete_details", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_responses"),
    )
    for columns in (["tenant_id", "id"], ["model", "id"], ["status", "id"]):
        op.create_index(f"ix_responses_{'_'.join(columns)}", "responses", columns)
    op.create_index("ix_responses_created_at", "responses", ["created_at"])
    op.create_index(
        "ix_responses_in_progress",
        "responses",
        ["replica_id"],
        postgresql_where=sa.text("status = 'in_progress'"),
        sqlite_where=sa.text("status = 'in_progress'"),
    )
    op.create_table(
        "response_items",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("response_id", sa.String(40), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_response_items"),
        sa.ForeignKeyConstraint(
            ["response_id"],
            ["responses.id"],
            name="fk_response_items_response_id_responses",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_response_items_response_id_id", "response_items", ["response_id", "id"])
    op.create_index(
        "ix_response_items_response_id_position", "response_items", ["response_id", "position"]
    )
    op.add_column("router_replay", sa.Column("response_id", sa.String(40), nullable=True))


def downgrade() -> None:
    op.drop_column("router_replay", "response_id")
    op.drop_table("response_items")
    op.drop_table("responses")
