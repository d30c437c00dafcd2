"""treasury v2: usd_swapped, carry-over revenue, buyback events, operator pause, price observations

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 11:00:00

Existing buybacks: a burned one is taken to have swapped what it claimed (the seed never
recorded otherwise), a failed one nothing. revenue_events.idle_job_id becomes nullable: a
carry-over event (revenue a partial buyback did not spend) has no idle job.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import app.models

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('buybacks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('usd_swapped', sa.BigInteger(), nullable=True))
    op.execute("UPDATE buybacks SET usd_swapped = usd_amount WHERE status = 'burned'")
    op.execute("UPDATE buybacks SET usd_swapped = 0 WHERE status = 'failed'")

    with op.batch_alter_table('revenue_events', schema=None) as batch_op:
        batch_op.alter_column('idle_job_id', existing_type=sa.Integer(), nullable=True)
        batch_op.add_column(sa.Column('carried_from_buyback_id', sa.Integer(), nullable=True))
        batch_op.create_unique_constraint('uq_revenue_events_carried_from_buyback_id',
                                          ['carried_from_buyback_id'])

    op.create_table('buyback_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('buyback_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('detail', sa.String(length=1000), nullable=False),
    sa.Column('created_at', app.models.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['buyback_id'], ['buybacks.id'], name='fk_buyback_events_buyback_id'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('buyback_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_buyback_events_buyback_id'), ['buyback_id'],
                              unique=False)

    op.create_table('treasury_controls',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('paused', sa.Boolean(), nullable=False),
    sa.Column('reason', sa.String(length=200), nullable=True),
    sa.Column('changed_by', sa.String(length=42), nullable=True),
    sa.Column('updated_at', app.models.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )

    op.create_table('price_observations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('pair', sa.String(length=42), nullable=False),
    sa.Column('block_number', sa.BigInteger(), nullable=False),
    sa.Column('timestamp', sa.BigInteger(), nullable=False),
    sa.Column('price0_cumulative', sa.String(length=80), nullable=False),
    sa.Column('price1_cumulative', sa.String(length=80), nullable=False),
    sa.Column('created_at', app.models.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('price_observations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_price_observations_pair'), ['pair'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('price_observations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_price_observations_pair'))
    op.drop_table('price_observations')
    op.drop_table('treasury_controls')
    with op.batch_alter_table('buyback_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_buyback_events_buyback_id'))
    op.drop_table('buyback_events')
    op.execute("DELETE FROM revenue_events WHERE idle_job_id IS NULL")
    with op.batch_alter_table('revenue_events', schema=None) as batch_op:
        batch_op.drop_constraint('uq_revenue_events_carried_from_buyback_id', type_='unique')
        batch_op.drop_column('carried_from_buyback_id')
        batch_op.alter_column('idle_job_id', existing_type=sa.Integer(), nullable=False)
    with op.batch_alter_table('buybacks', schema=None) as batch_op:
        batch_op.drop_column('usd_swapped')
