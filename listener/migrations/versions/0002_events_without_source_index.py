"""events: no index on source

The call log gets a row for every webhook, and each of its indexes is one
more page that every webhook's commit writes: on SQLite 8.4 pages of
write-ahead log per /create with it, 7.5 without, and the write lock is held
while they are written. The admin API's call log is listed newest first and
paged, so a filter on source reads events backwards by id until a page is
full, as its filters on status and endpoint always have.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03 20:20:00
"""
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index('ix_events_source')


def downgrade() -> None:
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index('ix_events_source', ['source'], unique=False)
