"""Alembic's environment for the records: always run by `lmforge.records.store` on a connection it
passes in `config.attributes["connection"]`, inside the transaction that holds its upgrade lock, so
no alembic.ini and no URL in the environment are needed.

To write the next migration, edit `lmforge.records.schema` and add `versions/NNNN_name.py` by hand
(or autogenerate against a database at head, with this folder as `script_location`).
"""

from __future__ import annotations

from alembic import context

from lmforge.records.schema import VERSION_TABLE, Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, version_table=VERSION_TABLE,
                  render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
