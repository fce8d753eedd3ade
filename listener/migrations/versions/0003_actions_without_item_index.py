"""actions: no index on item_id alone

``uq_actions_item_once``, on (item_id, once_key), begins with item_id: it
serves every lookup by item (an item's actions on the admin API, the store's
search for a queued twin, the foreign key's checks) as the index on item_id
alone did. That one was a copy that every write of an action kept up to date:
on SQLite one more B-tree to read and write when a /proxy inserts its
action; on PostgreSQL, where a claim and a finish change the indexed status
(so they are not HOT updates), one more index entry for the insert and for
each of them.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 16:10:00
"""
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('actions', schema=None) as batch_op:
        batch_op.drop_index('ix_actions_item')


def downgrade() -> None:
    with op.batch_alter_table('actions', schema=None) as batch_op:
        batch_op.create_index('ix_actions_item', ['item_id'], unique=False)
