"""A business's usage: its completed chat and idle jobs in [start, end), grouped in SQL by day
(of completion, UTC), key, model or kind. Tokens come from the job rows (the server's count),
cost from the ledger's charge entries of those jobs (zero for a job that was not priced).
Trust checks (ChatJob.purpose set) are the network's own work, never a business's usage.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (BigInteger, Date, String, and_, cast, func, literal, select,
                        type_coerce, union_all)
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.ledger import usd
from app.models import (MICRO_PER_USD, ApiKey, ChatJob, IdleJob, JobStatus, LedgerEntry,
                        LedgerKind)

GROUPS = ("day", "key", "model", "kind")


@dataclass(frozen=True)
class UsageRow:
    group: str
    jobs: int
    output_tokens: int
    cost_usd: Decimal


def _day(column: Any, dialect: str) -> Any:
    """The one dialect difference here: the UTC day of a stored (naive UTC) timestamp. SQLite
    keeps timestamps as ISO text, so date() takes its first ten characters; PostgreSQL casts."""
    return func.date(column) if dialect == "sqlite" else cast(column, Date)


def _micro_usd() -> Any:
    """A job's charge as stored, integer micro-dollars (0 if none): summed exactly in SQL and
    read back the same on both databases, whatever a union does to the column's type."""
    return func.coalesce(type_coerce(LedgerEntry.amount_usd, BigInteger), 0)


def _jobs(business_id: int, start: datetime, end: datetime) -> Any:
    """One row per completed job of the business in the range, both kinds, with its charge."""
    def charge_of(kind: str, job_id: Any) -> Any:
        return and_(LedgerEntry.job_kind == kind, LedgerEntry.job_id == job_id,
                    LedgerEntry.kind == LedgerKind.charge)

    chat = (select(literal("chat").label("kind"), ChatJob.api_key_id.label("api_key_id"),
                   func.coalesce(ChatJob.model, "default").label("model"),
                   ChatJob.completed_at.label("completed_at"),
                   func.coalesce(ChatJob.output_tokens, 0).label("output_tokens"),
                   _micro_usd().label("amount"))
            .outerjoin(LedgerEntry, charge_of("chat", ChatJob.id))
            .where(ChatJob.business_id == business_id, ChatJob.purpose.is_(None),
                   ChatJob.status == JobStatus.completed, ChatJob.completed_at >= start,
                   ChatJob.completed_at < end))
    idle = (select(literal("idle").label("kind"), IdleJob.api_key_id.label("api_key_id"),
                   literal("idle").label("model"), IdleJob.completed_at.label("completed_at"),
                   func.coalesce(IdleJob.output_tokens, 0).label("output_tokens"),
                   _micro_usd().label("amount"))
            .outerjoin(LedgerEntry, charge_of("idle", cast(IdleJob.id, String)))
            .where(IdleJob.business_id == business_id, IdleJob.status == JobStatus.completed,
                   IdleJob.completed_at >= start, IdleJob.completed_at < end))
    return union_all(chat, idle).subquery("usage_jobs")


async def usage(session: AsyncSession, business_id: int, start: datetime, end: datetime,
                group_by: str) -> list[UsageRow]:
    """Rows ordered by group. Charges are negative entries: cost is their negated sum."""
    if group_by not in GROUPS:
        raise ValueError(f"group_by must be one of {GROUPS}")
    jobs = _jobs(business_id, start, end)
    dialect = session.bind.dialect.name
    group = {"day": _day(jobs.c.completed_at, dialect), "key": jobs.c.api_key_id,
             "model": jobs.c.model, "kind": jobs.c.kind}[group_by].label("grp")
    rows = (await session.execute(
        select(group, func.count(), func.sum(jobs.c.output_tokens), func.sum(jobs.c.amount))
        .group_by(group).order_by(group))).all()
    names = await _key_prefixes(session, [r[0] for r in rows]) if group_by == "key" else {}
    return [UsageRow(group=_label(value, group_by, names), jobs=int(n),
                     output_tokens=int(tokens or 0), cost_usd=usd(-_micro(amount)))
            for value, n, tokens, amount in rows]


def _micro(total: Any) -> Decimal:
    return Decimal(int(total or 0)) / MICRO_PER_USD


def _label(value: Any, group_by: str, names: dict[int, str]) -> str:
    if value is None:
        return "none"  # a job submitted without a key (before keys were recorded on jobs)
    if group_by == "day":
        return value.isoformat() if isinstance(value, date) else str(value)[:10]
    if group_by == "key":
        return names.get(int(value), str(value))
    return str(value)


async def _key_prefixes(session: AsyncSession, ids: list[Any]) -> dict[int, str]:
    wanted = [int(i) for i in ids if i is not None]
    if not wanted:
        return {}
    return dict((await session.execute(
        select(ApiKey.id, ApiKey.prefix).where(ApiKey.id.in_(wanted)))).all())
