"""Canaries: an operator's prompts with reference answers (from a trusted run of the model),
added with `mia canary add` or from a JSON-lines file (`mia canary load FILE`), one object a
line: {"prompt", "reference", "model"?, "context"?, "history"?: [{"role", "content"}]}."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import insert

from app.db import Database
from app.models import Canary, utcnow

ROLES = ("user", "assistant")


def check(item: dict[str, Any]) -> dict[str, Any]:
    """A canary's fields, or ValueError saying what is wrong."""
    prompt, reference = item.get("prompt"), item.get("reference")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("a canary needs a non-empty prompt")
    if not isinstance(reference, str) or not reference.strip():
        raise ValueError("a canary needs a non-empty reference answer")
    history = item.get("history") or []
    if not isinstance(history, list) or any(
            not isinstance(t, dict) or t.get("role") not in ROLES
            or not isinstance(t.get("content"), str) for t in history):
        raise ValueError("history is a list of {role: user|assistant, content: text}")
    model = item.get("model")
    if model is not None and not isinstance(model, str):
        raise ValueError("model is a model name")
    context = item.get("context")
    return dict(prompt=prompt, reference=reference, model=model or None, context=context,
                history=orjson.dumps(history).decode() if history else None)


async def add(db: Database, items: list[dict[str, Any]]) -> list[int]:
    """Store the canaries (all or none); their ids."""
    rows = []
    for n, item in enumerate(items, 1):
        try:
            rows.append(check(item))
        except ValueError as exc:
            raise ValueError(f"canary {n}: {exc}") from None
    ids = []
    async with db.transaction() as session:
        for row in rows:
            ids.append((await session.execute(insert(Canary.__table__).values(
                **row, active=True, created_at=utcnow()).returning(Canary.id))).scalar_one())
    return ids


def parse_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                out.append(orjson.loads(line))
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"line {n}: not JSON ({exc})") from None
    return out
