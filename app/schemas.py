"""Base classes for request and response bodies shared by the domains."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


def _no_nul(value: Any) -> Any:
    # PostgreSQL text cannot hold NUL; refuse it at the door (422) for every string field.
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("NUL characters are not allowed")
    return value


class RequestBody(BaseModel):
    """JSON request bodies: strict types (no "5" for 5), unknown fields ignored."""

    model_config = ConfigDict(strict=True, extra="ignore")

    _nul = field_validator("*", mode="after")(_no_nul)


class QueryParams(BaseModel):
    """Query strings arrive as text, so these coerce; unknown parameters are ignored."""

    model_config = ConfigDict(extra="ignore")

    _nul = field_validator("*", mode="after")(_no_nul)


class WaitQuery(QueryParams):
    wait: float = Field(default=0, ge=0, le=60, description="seconds to wait for the job to finish")


class ResponseBody(BaseModel):
    pass
