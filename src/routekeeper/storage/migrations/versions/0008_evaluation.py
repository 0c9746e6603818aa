"""evaluation_results

Revision ID: 0008_evaluation
Revises: 0007_jobs
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_evaluation"
down_revision = "0007_jobs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "evaluation_results",
        sa.Column("job_id", sa.String(40), nullable=False),
        sa.Column("item_index", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("valid", sa.Boolean(), nullable=False),
        sa.Column("correct", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expected_decision", sa.Text(), nullable=True),
        sa.Column("expected_model", sa.Text(), nullable=True),
        sa.Column("decision", sa.String(256), nullable=True),
        sa.Column("model", sa.String(256), nullable=True),
        sa.Column("decision_correct", sa.Boolean(), nullable=True),
        sa.Column("model_correct", sa.Boolean(), nullable=True),
        sa.Column("routing_ms", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("sent_to_model", sa.Boolean(), nullable=False),
        sa.Column("upstream_ms", sa.Float(), nullable=True),
        sa.Column("upstream_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("job_id", "item_index", name="pk_evaluation_results"),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["jobs.id"],
            name="fk_evaluation_results_job_id_jobs",
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        "ix_evaluation_results_job_id_correct_item_index",
        "evaluation_results",
        ["job_id", "correct", "item_index"],
    )


def downgrade() -> None:
    op.drop_table("evaluation_results")
