"""Trusted answers from untrusted miners: verification jobs, canaries, business feedback,
reputation, probation. The one face the rest of the app uses:

route(c, miner_id, model)            the lease path: which lists a wallet's poll pops (routing.py)
completed(c, job_ids, miner_id)      the lease path, after an answer's commit (verify.py)
routed_list(model, purpose, check)   the queue list a chat job goes back to (lists.py)
give_feedback(...)                   POST /chat/{job_id}/feedback (feedback.py)
miner_record / network_summary       GET /miners/{address}, /network (record.py)
add_canaries / parse_canaries        `mia canary add|load` (canaries.py)
register_rescorer                    more checks of sampled answers (verify.py, rescore.py)
standing_channel / forget_standings  a wallet sent back to probation: every process forgets
                                     the standings it remembers (app/main.py listens)

Check jobs are chat_jobs rows with `purpose` set: a miner leases them exactly like a business's
job; they are never billed, never shown to a business and not counted as traffic
(customer_jobs()). README.md "Why you can trust the answers" says what each check catches.
"""

from __future__ import annotations

from typing import Any

from app.models import ChatJob
from app.trust.canaries import add as add_canaries
from app.trust.canaries import parse_lines as parse_canaries
from app.trust.feedback import give as give_feedback
from app.trust.lists import routed_list
from app.trust.record import miner_record, network_summary
from app.trust.routing import route
from app.trust.standing import channel as standing_channel
from app.trust.standing import forget_all as forget_standings
from app.trust.verify import completed, register_rescorer


def customer_jobs() -> Any:
    """The condition that keeps check jobs out of traffic and revenue figures."""
    return ChatJob.purpose.is_(None)


__all__ = ["add_canaries", "completed", "customer_jobs", "forget_standings", "give_feedback",
           "miner_record", "network_summary", "parse_canaries", "register_rescorer", "route",
           "routed_list", "standing_channel"]
