"""Alembic environment for routekeeper. Always online, always on a connection handed in by
``routekeeper.storage.migrate`` (which holds the migration lock and the transaction)."""

from alembic import context

from routekeeper.storage.dialect import dialect_named
from routekeeper.storage.stores import declared_metadata

connection = context.config.attributes.get("connection")
if connection is None or context.is_offline_mode():
    raise RuntimeError(
        "routekeeper migrations run through `routekeeper db upgrade`, not the alembic CLI"
    )

context.configure(
    connection=connection,
    target_metadata=declared_metadata(),
    render_as_batch=not dialect_named(connection.dialect.name).postgres,
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
