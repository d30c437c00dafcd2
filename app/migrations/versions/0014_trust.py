"""trust: verification and canary jobs, reputation, checks, canaries, business feedback

Revision ID: 0014
Revises: 0009

Verification and canary jobs are chat_jobs rows (so a miner leases them exactly like a
business's job) marked by `purpose`; app/trust keeps them out of billing, traffic and the
business's view. Each wallet's checks are rows of trust_checks, and its reputation is kept on
its miners row.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0014'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('chat_jobs', sa.Column('purpose', sa.String(16), nullable=True))
    op.add_column('chat_jobs', sa.Column('origin_job_id', sa.String(36), nullable=True))
    op.add_column('chat_jobs', sa.Column('canary_id', sa.Integer(), nullable=True))
    op.add_column('chat_jobs', sa.Column('check_model', sa.String(128), nullable=True))
    op.create_index('ix_chat_jobs_origin_job_id', 'chat_jobs', ['origin_job_id'])
    op.add_column('miners', sa.Column('suspended_reason', sa.String(500), nullable=True))
    op.add_column('miners', sa.Column('graduated_at', sa.DateTime(), nullable=True))
    for name in ('rep_passed', 'rep_failed'):
        op.add_column('miners', sa.Column(name, sa.Float(), nullable=False, server_default='0'))
    for name in ('checks_passed', 'checks_failed'):
        op.add_column('miners', sa.Column(name, sa.Integer(), nullable=False,
                                          server_default='0'))
    op.create_table(
        'trust_checks',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('miner_id', sa.Integer(), sa.ForeignKey('miners.id'), nullable=False),
        sa.Column('kind', sa.String(16), nullable=False),
        sa.Column('passed', sa.Boolean(), nullable=False),
        sa.Column('job_id', sa.String(36), nullable=True),
        sa.Column('weight', sa.Float(), nullable=False),
        sa.Column('similarity', sa.Float(), nullable=True),
        sa.Column('tokens_forfeited', sa.Integer(), nullable=False),
        sa.Column('detail', sa.String(300), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
    )
    op.create_index('ix_trust_checks_miner_kind', 'trust_checks', ['miner_id', 'kind'])
    op.create_index('ix_trust_checks_created_at', 'trust_checks', ['created_at'])
    op.create_table(
        'canaries',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('model', sa.String(128), nullable=True),
        sa.Column('prompt', sa.Text(), nullable=False),
        sa.Column('context', sa.Text(), nullable=True),
        sa.Column('history', sa.Text(), nullable=True),
        sa.Column('reference', sa.Text(), nullable=False),
        sa.Column('active', sa.Boolean(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
    )
    op.create_table(
        'feedback',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('job_id', sa.String(36), sa.ForeignKey('chat_jobs.id'), nullable=False,
                  unique=True),
        sa.Column('business_id', sa.Integer(), sa.ForeignKey('businesses.id'), nullable=True),
        sa.Column('miner_id', sa.Integer(), sa.ForeignKey('miners.id'), nullable=True),
        sa.Column('rating', sa.String(8), nullable=False),
        sa.Column('comment', sa.String(2000), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table('feedback')
    op.drop_table('canaries')
    op.drop_index('ix_trust_checks_created_at', 'trust_checks')
    op.drop_index('ix_trust_checks_miner_kind', 'trust_checks')
    op.drop_table('trust_checks')
    with op.batch_alter_table('miners') as batch:
        for name in ('checks_failed', 'checks_passed', 'rep_failed', 'rep_passed',
                     'graduated_at', 'suspended_reason'):
            batch.drop_column(name)
    op.drop_index('ix_chat_jobs_origin_job_id', 'chat_jobs')
    with op.batch_alter_table('chat_jobs') as batch:
        for name in ('check_model', 'canary_id', 'origin_job_id', 'purpose'):
            batch.drop_column(name)
