"""The lease protocol, written once for every job kind (chat, idle).

rules.py      the state changes, each one conditional UPDATE on the job's row
protocol.py   JobKind, the extension point (what a lease hands out, what a result writes, and an
              optional PostgreSQL fast path), and the steps every kind shares: parse popped ids,
              lease, check signatures, store results, settle the losers
endpoints.py  the miner endpoints of a kind (next, batch, result, results, extend, release),
              declared by each kind's routes; each handler owns its transactions
schemas.py    the bodies every kind shares (lease, release, per-item batch answers)
polls.py      MINER_MAX_POLLS: a wallet's open long-polls, counted in Redis

The limits on a wallet: one delivery's lease ends LEASE_MAX_TOTAL_S after assignment whatever the
extensions (rules.extend); a wallet holds at most MINER_MAX_LEASES leases of all kinds together
(protocol.room, counted in the database) and keeps at most MINER_MAX_POLLS long-polls open; a
suspended wallet leases nothing and its leases are taken back (protocol.take_back_all).

Streamed partial outputs: POST {prefix}/{job_id}/chunk checks the lease as extend does, only on a
job its kind says is streamed (JobKind.streamed), within the lease's budget (protocol.
stream_budget), and relays the chunk over Redis (app/relay.py); the final result stays the
signed, whole output stored by results(), which checks every posted lease before any signature
or tokenizing. Every delivery that ended without a result is a row of job_returns (rules.py).
"""
