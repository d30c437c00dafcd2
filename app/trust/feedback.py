"""A business's rating of one of its answers: a check of kind "feedback" against the wallet
that answered, with FEEDBACK_WEIGHT (a business can be wrong or malicious). One per job."""

from __future__ import annotations

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from app.context import AppContext
from app.errors import Conflict
from app.models import ChatJob, Feedback, JobStatus, utcnow
from app.trust import reputation


async def give(c: AppContext, job: ChatJob, business_id: int | None, rating: str,
               comment: str | None) -> None:
    """`job` must be the business's own (the caller checked it, e.g. app/chat/service.get_owned)."""
    if job.status != JobStatus.completed or job.miner_id is None:
        raise Conflict("only an answered job can be rated", code="job_not_answered")
    now = utcnow()
    try:
        async with c.db.transaction() as session:
            if (await session.execute(select(Feedback.id).where(Feedback.job_id == job.id))
                    ).first() is not None:
                raise Conflict("this job was rated already", code="feedback_exists")
            await session.execute(insert(Feedback.__table__).values(
                job_id=job.id, business_id=business_id, miner_id=job.miner_id, rating=rating,
                comment=comment, created_at=now))
            await reputation.record(session, c, miner_id=job.miner_id, kind="feedback",
                                    passed=rating == "up", job_id=job.id, now=now,
                                    weight=c.settings.feedback_weight,
                                    detail=None if rating == "up" else "a business rated it down")
    except IntegrityError:
        raise Conflict("this job was rated already", code="feedback_exists") from None
