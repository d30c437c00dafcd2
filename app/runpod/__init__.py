"""RunPod serverless: async client (``client``) and a local protocol stand-in (``standin``)."""

from app.runpod.client import DEFAULT_BASE_URL, RunPodClient, build_input, parse_output
from app.runpod.errors import (
    RunPodAuthError,
    RunPodError,
    RunPodJobFailed,
    RunPodMalformedOutput,
    RunPodNotFound,
    RunPodProtocolError,
    RunPodTimeout,
    RunPodTransientError,
)
from app.runpod.models import JobStatus, RunPodResult, RunPodStatus

__all__ = [
    "DEFAULT_BASE_URL",
    "JobStatus",
    "RunPodAuthError",
    "RunPodClient",
    "RunPodError",
    "RunPodJobFailed",
    "RunPodMalformedOutput",
    "RunPodNotFound",
    "RunPodProtocolError",
    "RunPodResult",
    "RunPodStatus",
    "RunPodTimeout",
    "RunPodTransientError",
    "build_input",
    "parse_output",
]
