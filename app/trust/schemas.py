from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from app.schemas import RequestBody, ResponseBody


class Tally(ResponseBody):
    passed: int
    failed: int


class ChecksOut(ResponseBody):
    passed: int
    failed: int
    by_kind: dict[str, Tally] = Field(description="verify (a re-run by another wallet agreed or "
                                                  "not), canary, feedback (a business's "
                                                  "rating), rescore")
    last_24h: Tally


class MinerRecordOut(ResponseBody):
    address: str
    jobs_done: int = Field(description="jobs credited (a failed check takes its job back)")
    tokens_generated: int
    checks: ChecksOut
    score: float = Field(description="mean of the Beta posterior of its decayed checks, 0-1; "
                                     "0.5 before any check")
    probation: bool = Field(description="on probation: it answers check work only, never a "
                                        "business, until it has passed PROBATION_JOBS checks")
    graduated_at: datetime | None
    suspended: bool
    suspended_at: datetime | None
    suspended_reason: str | None = Field(description="why it was suspended automatically; null "
                                                     "for an operator's suspension")


class FeedbackIn(RequestBody):
    rating: Literal["up", "down"]
    comment: str | None = Field(default=None, max_length=2000)


class FeedbackOut(ResponseBody):
    job_id: str
    rating: Literal["up", "down"]


class ScoreBucket(ResponseBody):
    below: float = Field(description="upper bound of the bucket (the last includes 1.0)")
    miners: int


class HourChecks(ResponseBody):
    hour: datetime
    passed: int
    failed: int


class TrustOut(ResponseBody):
    score_distribution: list[ScoreBucket] = Field(description="wallets not suspended, by score")
    miners_suspended: int
    checks_last_hour: int
    checks_per_hour: list[HourChecks] = Field(description="checks judged per hour, last 24 h")
