"""Business accounts: a prepaid balance per business on an append-only ledger (ledger.py), holds
on priced jobs and what they are charged (billing.py), top-ups by operators and on-chain
deposits (deposits.py), usage and limits, and the business's own data: export and erasure.

The lease path and the job kinds call this room through billing.py (hold_for / settle /
release; the chat hot path's batch through pg.settle) and ledger.release_job; nothing here
imports a job kind (tests/test_layering.py).
"""
