"""Base classes for request and response bodies shared by the domains."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class RequestBody(BaseModel):
    """JSON request bodies: strict types (no "5" for 5), unknown fields ignored."""

    model_config = ConfigDict(strict=True, extra="ignore")


class QueryParams(BaseModel):
    """Query strings arrive as text, so these coerce; unknown parameters are ignored."""

    model_config = ConfigDict(extra="ignore")


class ResponseBody(BaseModel):
    pass
