"""The lease protocol, written once for every job kind (chat, idle).

rules.py     the state changes, each one conditional UPDATE on the job's row
protocol.py  JobKind, the extension point (what a lease hands out, what a result writes), and
             the steps every kind shares: take ids from the queue, lease, check and store results
routes.py    the miner endpoints of a kind (next, batch, result, results, extend, release); the
             route owns each transaction
"""
