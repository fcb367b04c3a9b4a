"""secrets at rest: room for sealed webhook secrets and push subscriptions' auth secrets

The values themselves are sealed by the processes (at start, and by `tally secrets rotate`): a
migration has no key. Downgrading needs the values in clear again, which only a process with the
keys could write; PostgreSQL refuses to narrow a column holding sealed values.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

SEALED = (("webhooks", "secret"), ("push_subscriptions", "auth"))


def upgrade() -> None:
    for table, column in SEALED:
        with op.batch_alter_table(table) as batch:
            batch.alter_column(column, existing_type=sa.String(length=64), type_=sa.String(length=255),
                               existing_nullable=False)


def downgrade() -> None:
    # Code from before 0010 would take a sealed value for the secret itself (SQLite would keep it
    # without a word): refuse, and say what to do.
    bind = op.get_bind()
    for table, column, mine in (*((t, c, "") for t, c in SEALED),
                                ("site_secrets", "value", " AND name <> 'sealing-check'")):  # (old code never reads that one)
        sealed = bind.execute(sa.text(f"SELECT COUNT(*) FROM {table} WHERE {column} LIKE 'sealed:%'{mine}")).scalar()
        if sealed:
            raise RuntimeError(f"{table}.{column} holds {sealed} sealed value(s): a version before 0010 cannot "
                               "read them. Restore the backup taken before upgrading instead.")
    for table, column in SEALED:
        with op.batch_alter_table(table) as batch:
            batch.alter_column(column, existing_type=sa.String(length=255), type_=sa.String(length=64),
                               existing_nullable=False)
