"""Errors raised by the RunPod serverless client.

Every error carries ``reason``: a short, human sentence that is safe to store on a job row.
It never contains the API key (the client scrubs anything RunPod echoes back).
"""

from __future__ import annotations

_REASON_MAX = 300


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _REASON_MAX else text[: _REASON_MAX - 3] + "..."


class RunPodError(Exception):
    """Base class. ``runpod_job_id`` is set whenever a RunPod job is known to exist;
    ``execution_ms`` when RunPod reported how long a job that ended ran (what it bills)."""

    execution_ms: int | None = None

    def __init__(self, reason: str, *, runpod_job_id: str | None = None) -> None:
        self.reason = _short(reason)
        self.runpod_job_id = runpod_job_id
        super().__init__(self.reason)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reason!r}, runpod_job_id={self.runpod_job_id!r})"


class RunPodTransientError(RunPodError):
    """Network error, 408, 429 or 5xx. Retrying later may succeed.

    ``job_may_exist`` matters only for ``submit``: False means the request certainly created
    no job (connection refused, 429), so resubmitting cannot run the prompt twice.
    """

    def __init__(
        self,
        reason: str,
        *,
        status_code: int | None = None,
        job_may_exist: bool = True,
        runpod_job_id: str | None = None,
    ) -> None:
        super().__init__(reason, runpod_job_id=runpod_job_id)
        self.status_code = status_code
        self.job_may_exist = job_may_exist


class RunPodAuthError(RunPodError):
    """RunPod answered 401/403: the API key is missing, wrong or lacks access to the endpoint."""

    def __init__(self, reason: str, *, status_code: int, runpod_job_id: str | None = None) -> None:
        super().__init__(reason, runpod_job_id=runpod_job_id)
        self.status_code = status_code


class RunPodNotFound(RunPodError):
    """404: unknown endpoint id, or a job id RunPod does not know (never existed or expired)."""


class RunPodProtocolError(RunPodError):
    """RunPod answered something this client does not understand (other 4xx, non-JSON,
    missing job id, unknown status). Not retried."""


class RunPodJobFailed(RunPodError):
    """RunPod reports the job ended as FAILED, CANCELLED or TIMED_OUT.

    ``status`` is that terminal status; ``error`` the error text RunPod reported, if any.
    """

    def __init__(self, reason: str, *, runpod_job_id: str, status: str, error: str | None) -> None:
        super().__init__(reason, runpod_job_id=runpod_job_id)
        self.status = status
        self.error = error


class RunPodTimeout(RunPodError):
    """We stopped waiting after ``timeout_s`` seconds and asked RunPod to cancel the job.

    ``cancelled`` says whether RunPod acknowledged the cancel request.
    """

    def __init__(self, reason: str, *, runpod_job_id: str, timeout_s: float, cancelled: bool) -> None:
        super().__init__(reason, runpod_job_id=runpod_job_id)
        self.timeout_s = timeout_s
        self.cancelled = cancelled


class RunPodMalformedOutput(RunPodError):
    """The job COMPLETED but its output has none of the accepted shapes."""
