"""What a log line is about: the request, the job, the business or miner. contextvars, so each
request (an asyncio task) and each worker job carries its own and nothing leaks between them."""

from __future__ import annotations

import contextlib
import contextvars
import re
import itertools
import os
from collections.abc import Iterator
from typing import Any

FIELDS = ("request_id", "job_id", "business_id", "miner", "buyback_id")
_vars: dict[str, contextvars.ContextVar[Any]] = {
    name: contextvars.ContextVar(f"mia_{name}", default=None) for name in FIELDS}
# A caller's X-Request-Id is kept when it looks like an id (a UUID, a ULID, a load balancer's
# trace id); anything else (spaces, quotes, newlines, 200 characters) is replaced by our own.
_WELL_FORMED = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{7,127}")


_PREFIX = os.urandom(8).hex()  # this process's, drawn once (renewed in a forked child)
_count = itertools.count(1)


def _forked() -> None:
    global _PREFIX, _count
    _PREFIX, _count = os.urandom(8).hex(), itertools.count(1)


os.register_at_fork(after_in_child=_forked)


def new_request_id(given: str | None = None) -> str:
    """The caller's id if well formed, else ours: 64 random bits of this process and a counter
    (32 hex digits, unique across processes, no system call per request)."""
    if given is not None and _WELL_FORMED.fullmatch(given):
        return given
    return f"{_PREFIX}{next(_count):016x}"


def current() -> dict[str, Any]:
    """The fields set now (None ones left out)."""
    out = {}
    for name, var in _vars.items():
        value = var.get()
        if value is not None:
            out[name] = value
    return out


def clear() -> None:
    for var in _vars.values():
        var.set(None)


def request_id() -> str | None:
    return _vars["request_id"].get()  # type: ignore[no-any-return]


def set_fields(**fields: Any) -> None:
    """Set for the rest of this task (a request handler naming its business, miner, job)."""
    for name, value in fields.items():
        if value is not None:
            _vars[name].set(str(value))


@contextlib.contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """Set while the block runs, then restored (a worker task handling one job)."""
    tokens = [(_vars[name], _vars[name].set(str(value))) for name, value in fields.items()
              if value is not None]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)
