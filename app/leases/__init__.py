"""The lease protocol, written once for every job kind (chat, idle).

rules.py      the state changes, each one conditional UPDATE on the job's row
protocol.py   JobKind, the extension point (what a lease hands out, what a result writes, and an
              optional PostgreSQL fast path), and the steps every kind shares: parse popped ids,
              lease, check signatures, store results, settle the losers
endpoints.py  the miner endpoints of a kind (next, batch, result, results, extend, release),
              declared by each kind's routes; each handler owns its transactions
schemas.py    the bodies every kind shares (lease, release, per-item batch answers)

Room for streamed partial outputs (a later issue): a partial output belongs to a lease, so it
would be one more endpoint here (a chunk posted on {prefix}/{job_id}/...) that checks the lease
the way extend does and relays the chunk over Redis to whichever API process holds the client;
the final result stays the signed, whole output stored by results().
"""
