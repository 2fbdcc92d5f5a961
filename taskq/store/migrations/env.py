"""Alembic environment: migrations run on the connection taskq hands over.

``taskq.store.engine.migrate`` passes its connection in ``config.attributes``;
there is no other way in, so the URL and the pragmas are always taskq's own.
"""

from alembic import context

from taskq.store.schema import metadata

context.configure(
    connection=context.config.attributes["connection"],
    target_metadata=metadata,
    # SQLite alters tables by copying them; batch mode does that for us.
    render_as_batch=True,
)
with context.begin_transaction():
    context.run_migrations()
