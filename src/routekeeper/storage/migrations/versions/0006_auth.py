"""api_keys and audit_events; router_replay.key_id; replay filter indexes carry the tenant

Revision ID: 0006_auth
Revises: 0005_conversations
Create Date: 2026-12-07

The replay list filters keep their (column, id) order, so a list over every tenant (an admin
key's default) still walks one index in id order; the tenant is added after the id, so a
list limited to one tenant checks it in the index without reading rows of other tenants.
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_auth"
down_revision = "0005_conversations"
branch_labels = None
depends_on = None

REPLAY_FILTERS = ("decision", "selected_model", "lifecycle_state", "session_id")


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("label", sa.String(200), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("requests_per_minute", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
    )
    op.create_index("ix_api_keys_secret_hash", "api_keys", ["secret_hash"], unique=True)
    op.create_index("ix_api_keys_tenant_id_id", "api_keys", ["tenant_id", "id"])
    op.create_index("ix_api_keys_expires_at", "api_keys", ["expires_at"])
    op.create_table(
        "audit_events",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(40), nullable=True),
        sa.Column("actor_key_id", sa.String(40), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_events"),
    )
    op.create_index("ix_audit_events_kind_id", "audit_events", ["kind", "id"])
    op.create_index("ix_audit_events_key_id_id", "audit_events", ["key_id", "id"])
    op.create_index("ix_audit_events_tenant_id_id", "audit_events", ["tenant_id", "id"])
    op.create_index("ix_audit_events_occurred_at", "audit_events", ["occurred_at"])
    op.add_column("router_replay", sa.Column("key_id", sa.String(40), nullable=True))
    for column in REPLAY_FILTERS:
        op.drop_index(f"ix_router_replay_{column}_id", table_name="router_replay")
        op.create_index(
            f"ix_router_replay_{column}_id_tenant_id",
            "router_replay",
            [column, "id", "tenant_id"],
        )


def downgrade() -> None:
    for column in REPLAY_FILTERS:
        op.drop_index(f"ix_router_replay_{column}_id_tenant_id", table_name="router_replay")
        op.create_index(f"ix_router_replay_{column}_id", "router_replay", [column, "id"])
    op.drop_column("router_replay", "key_id")
    op.drop_table("audit_events")
    op.drop_table("api_keys")
