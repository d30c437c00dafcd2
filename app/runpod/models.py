"""Typed values returned by the RunPod client. Times are integer milliseconds."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class JobStatus(StrEnum):
    IN_QUEUE = "IN_QUEUE"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset(
    {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.TIMED_OUT}
)
FAILED_STATUSES = frozenset({JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.TIMED_OUT})


@dataclass(frozen=True, slots=True)
class RunPodStatus:
    """One `GET /status/{id}` answer.

    ``delay_ms``: time spent queued; ``execution_ms``: time spent running (RunPod's
    delayTime / executionTime). ``output`` is the raw, unparsed output; ``error`` the
    reported error text (non-string errors are JSON-encoded).
    """

    id: str
    status: JobStatus
    delay_ms: int | None = None
    execution_ms: int | None = None
    output: Any = None
    error: str | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status.is_terminal


@dataclass(frozen=True, slots=True)
class RunPodResult:
    """A COMPLETED job with parsed output. Token counts are None when the worker did not report them."""

    runpod_job_id: str
    text: str
    input_tokens: int | None
    output_tokens: int | None
    execution_ms: int | None
    delay_ms: int | None
