"""router_replay: captured prompt text and full-text search over it

Revision ID: 0003_replay_search
Revises: 0002_router_replay
Create Date: 2026-11-26

SQLite: an FTS5 table with external content (router_replay's rowid), kept in step by
triggers. PostgreSQL: a GIN index on the 'simple' tsvector of prompt_text. Both are
dialect-specific and left out of the schema comparison (see storage/migrate.py).
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_replay_search"
down_revision = "0002_router_replay"
branch_labels = None
depends_on = None

SQLITE = [
    "CREATE VIRTUAL TABLE router_replay_fts USING fts5("
    "prompt_text, content='router_replay', content_rowid='rowid')",
    "CREATE TRIGGER router_replay_fts_insert AFTER INSERT ON router_replay "
    "WHEN new.prompt_text IS NOT NULL BEGIN "
    "INSERT INTO router_replay_fts(rowid, prompt_text) VALUES (new.rowid, new.prompt_text); END",
    "CREATE TRIGGER router_replay_fts_delete AFTER DELETE ON router_replay "
    "WHEN old.prompt_text IS NOT NULL BEGIN "
    "INSERT INTO router_replay_fts(router_replay_fts, rowid, prompt_text) "
    "VALUES ('delete', old.rowid, old.prompt_text); END",
    "CREATE TRIGGER router_replay_fts_update AFTER UPDATE OF prompt_text ON router_replay BEGIN "
    "INSERT INTO router_replay_fts(router_replay_fts, rowid, prompt_text) "
    "SELECT 'delete', old.rowid, old.prompt_text WHERE old.prompt_text IS NOT NULL; "
    "INSERT INTO router_replay_fts(rowid, prompt_text) "
    "SELECT new.rowid, new.prompt_text WHERE new.prompt_text IS NOT NULL; END",
]


def upgrade() -> None:
    op.add_column("router_replay", sa.Column("prompt_text", sa.Text(), nullable=True))
    if op.get_bind().dialect.name == "sqlite":
        for statement in SQLITE:
            op.execute(statement)
    else:
        op.execute(
            "CREATE INDEX ix_router_replay_prompt_fts ON router_replay "
            "USING gin (to_tsvector('simple', coalesce(prompt_text, '')))"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER router_replay_fts_{name}")
        op.execute("DROP TABLE router_replay_fts")
    else:
        op.execute("DROP INDEX ix_router_replay_prompt_fts")
    op.drop_column("router_replay", "prompt_text")
