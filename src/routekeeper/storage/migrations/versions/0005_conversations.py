"""conversations and conversation_items; responses.conversation_id

Revision ID: 0005_conversations
Revises: 0004_responses
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_conversations"
down_revision = "0004_responses"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "conversations",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("next_position", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_conversations"),
    )
    op.create_index("ix_conversations_tenant_id_id", "conversations", ["tenant_id", "id"])
    op.create_index("ix_conversations_created_at", "conversations", ["created_at"])
    op.create_table(
        "conversation_items",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("conversation_id", sa.String(40), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("response_id", sa.String(40), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_conversation_items"),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name="fk_conversation_items_conversation_id_conversations",
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        "ix_conversation_items_conversation_id_position",
        "conversation_items",
        ["conversation_id", "position"],
        unique=True,
    )
    op.add_column("responses", sa.Column("conversation_id", sa.String(40), nullable=True))
    op.create_index("ix_responses_conversation_id_id", "responses", ["conversation_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_responses_conversation_id_id", table_name="responses")
    op.drop_column("responses", "conversation_id")
    op.drop_table("conversation_items")
    op.drop_table("conversations")
