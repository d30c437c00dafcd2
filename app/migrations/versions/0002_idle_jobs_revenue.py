"""idle jobs: leases, RunPod state, revenue ledger

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 06:03:28.565073

Seed rows keep their data: status "pending" becomes "queued" (the leasing vocabulary); a seed
"processing" row stays "processing" with no claim, so the worker's dispatcher picks it up.
Seed usd_earned values (posted by anyone) are NOT copied into the ledger.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import app.models

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

FKS = (("fk_idle_jobs_miner_id", "miners", "miner_id"),
       ("fk_idle_jobs_api_key_id", "api_keys", "api_key_id"),
       ("fk_idle_jobs_business_id", "businesses", "business_id"))
METRICS = ("runpod_income_usd", "total_idle_jobs_processed", "total_buyback_usd")


def upgrade() -> None:
    op.create_table('revenue_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('idle_job_id', sa.Integer(), nullable=False),
    sa.Column('amount_usd', sa.BigInteger(), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('output_tokens', sa.Integer(), nullable=False),
    sa.Column('created_at', app.models.UTCDateTime(), nullable=False),
    sa.Column('buyback_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['idle_job_id'], ['idle_jobs.id'],
                            name='fk_revenue_events_idle_job_id'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('idle_job_id', name='uq_revenue_events_idle_job_id')
    )
    with op.batch_alter_table('revenue_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_revenue_events_buyback_id'), ['buyback_id'], unique=False)

    with op.batch_alter_table('idle_jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('max_tokens', sa.Integer(), nullable=False,
                                      server_default='256'))
        batch_op.add_column(sa.Column('business_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('api_key_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('attempts', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('lease_id', sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column('lease_expires_at', app.models.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('miner_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('assigned_at', app.models.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('signature', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('processed_by', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('input_tokens', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('runpod_attempts', sa.Integer(), nullable=False,
                                      server_default='0'))
        batch_op.add_column(sa.Column('runpod_submitted_at', app.models.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('runpod_execution_ms', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('runpod_cost_usd', sa.BigInteger(), nullable=True))
        batch_op.create_index(batch_op.f('ix_idle_jobs_business_id'), ['business_id'], unique=False)
        batch_op.create_index('ix_idle_jobs_status_created', ['status', 'created_at'], unique=False)
        batch_op.create_index('ix_idle_jobs_status_lease', ['status', 'lease_expires_at'], unique=False)
        for name, table, column in FKS:
            batch_op.create_foreign_key(name, table, [column], ['id'])

    op.execute("UPDATE idle_jobs SET status = 'queued' WHERE status = 'pending'")
    metrics = sa.table('system_metrics', sa.column('metric_name', sa.String),
                       sa.column('value', sa.BigInteger()),
                       sa.column('updated_at', app.models.UTCDateTime()))
    for name in METRICS:
        # Derived values (app/ops/metrics.py refreshes them from the ledger); rows must exist.
        op.execute(metrics.insert().from_select(
            ['metric_name', 'value', 'updated_at'],
            sa.select(sa.literal(name), sa.literal(0), sa.func.current_timestamp()).where(
                ~sa.exists().where(metrics.c.metric_name == name))))


def downgrade() -> None:
    op.execute("UPDATE idle_jobs SET status = 'pending' WHERE status = 'queued'")
    op.execute("UPDATE idle_jobs SET status = 'processing' WHERE status = 'assigned'")
    with op.batch_alter_table('idle_jobs', schema=None) as batch_op:
        for name, _, _ in FKS:
            batch_op.drop_constraint(name, type_='foreignkey')
        batch_op.drop_index('ix_idle_jobs_status_lease')
        batch_op.drop_index('ix_idle_jobs_status_created')
        batch_op.drop_index(batch_op.f('ix_idle_jobs_business_id'))
        for column in ('runpod_cost_usd', 'runpod_execution_ms', 'runpod_submitted_at',
                       'runpod_attempts', 'input_tokens', 'processed_by', 'signature',
                       'assigned_at', 'miner_id', 'lease_expires_at', 'lease_id', 'attempts',
                       'api_key_id', 'business_id', 'max_tokens'):
            batch_op.drop_column(column)

    with op.batch_alter_table('revenue_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_revenue_events_buyback_id'))

    op.drop_table('revenue_events')
