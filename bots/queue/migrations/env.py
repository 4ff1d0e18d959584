"""Alembic's entry point for the queue's migrations, run by `bots.queue.engine.migrate`.

The caller hands over an open connection (holding the migration lock); there is no
alembic.ini: the queue URL comes from refund-bots' own settings.
"""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
