"""The bench itself: a short steady run and a short chaos run end to end, and its audit.

These keep `python -m bench` working (it starts the whole system in subprocesses); the numbers
are measured by `make bench`, not here.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from sqlalchemy import insert

from app.db import Database
from app.models import ChatJob, ChatLog, JobStatus, utcnow
from bench import ledger
from bench.__main__ import main as bench_main
from bench.__main__ import table
from bench.chaos import monkey
from bench.run import Plan, execute
from bench.system import Spec

pytestmark = pytest.mark.timeout(240)


@pytest.mark.parametrize("protocol", ["batch", "single"])
def test_a_short_steady_run_answers_every_chat(tmp_path, monkeypatch, protocol) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr("bench.__main__.RESULTS", tmp_path)
    assert bench_main(["steady", "--db", "sqlite", "--api-procs", "1", "--miners", "2",
                       "--clients", "4", "--duration", "3", "--warmup", "1", "--name", "t",
                       "--protocol", protocol, "--batch-max", "4"]) == 0
    result = json.loads((tmp_path / "t-sqlite.json").read_text())
    assert result["protocol"] == protocol
    assert result["batch_max"] == (4 if protocol == "batch" else None)
    assert result["completed"] > 0 and result["jobs_per_s"] > 0
    assert result["e2e_ms"]["p50"] > 0 and result["dispatch_ms"]["n"] > 0
    assert result["machine"]["cores"] >= 1 and result["peak_rss"]["max_process_mib"] > 0
    assert result["audit"]["lost"] == 0 and result["audit"]["duplicated"] == 0
    assert result["audit"]["miner_credits_match"] and not result["errors"]
    assert "completed chat jobs/s" in table(result)


def test_a_short_stream_run_measures_time_to_first_token(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr("bench.__main__.RESULTS", tmp_path)
    assert bench_main(["stream", "--db", "sqlite", "--api-procs", "1", "--miners", "2",
                       "--clients", "2", "--duration", "3", "--warmup", "1", "--name", "s"]) == 0
    result = json.loads((tmp_path / "s-sqlite.json").read_text())
    assert result["stream"] == {"words": 20, "word_s": 0.025}
    assert result["completed"] > 0 and result["ttft_ms"]["n"] == result["completed"]
    assert 0 < result["ttft_ms"]["p50"] < result["e2e_ms"]["p50"]  # the first word comes early
    assert result["audit"]["lost"] == 0 and not result["errors"]
    assert "time to first token" in table(result) and "streamed chats/s" in table(result)


def test_chaos_kills_and_restarts_and_loses_nothing(postgres_base) -> None:  # type: ignore[no-untyped-def]
    spec = Spec(database="postgres", postgres_url=postgres_base, api_procs=1, worker=True,
                env={"LEASE_SECONDS": "3", "REAPER_INTERVAL_S": "0.5",
                     "RECONCILE_INTERVAL_S": "1", "RECONCILE_GRACE_S": "1"})
    plan = Plan(scenario="chaos", miners=6, clients=6, rate=30, duration_s=14, warmup_s=1,
                miner_procs=2, settle_s=60, spec=spec)
    result = execute(plan, chaos=monkey)
    # something was really killed (the first victim comes 2-5 s in; on a loaded machine a
    # restart can take long enough that no second one fits in the window)
    assert sum(result["restarts"].values()) >= 1
    audit = result["audit"]
    assert audit["jobs"] > 0 and audit["by_status"].get("completed", 0) > 0
    assert audit["lost"] == 0 and audit["duplicated"] == 0
    assert audit["failed_without_reason"] == 0 and audit["completed_without_answer"] == 0
    assert audit["miner_credits_match"]


async def test_the_audit_finds_lost_and_twice_answered_jobs(sqlite_url) -> None:  # type: ignore[no-untyped-def]
    db = Database(sqlite_url)
    now = utcnow()
    ids = [str(uuid.uuid4()) for _ in range(2)]
    try:
        async with db.transaction() as session:
            for job_id, status in zip(ids, (JobStatus.completed, JobStatus.queued), strict=True):
                await session.execute(insert(ChatJob.__table__).values(
                    id=job_id, session_id="s", prompt="p", status=status, attempts=1,
                    created_at=now))
            for _ in range(2):  # the completed job answered twice
                await session.execute(insert(ChatLog.__table__).values(
                    session_id="s", message="a", role="assistant", timestamp=now, job_id=ids[0]))
    finally:
        await db.dispose()
    audit = await ledger.audit(sqlite_url, {*ids, str(uuid.uuid4())})  # one the DB never saw
    assert audit["lost"] == 2 and audit["duplicated"] == 1
    assert audit["miner_credits_match"] is False  # one completed, none credited


def test_settle_reports_what_is_still_open(sqlite_url) -> None:  # type: ignore[no-untyped-def]
    async def queue_one() -> None:
        db = Database(sqlite_url)
        try:
            async with db.transaction() as session:
                await session.execute(insert(ChatJob.__table__).values(
                    id=str(uuid.uuid4()), session_id="s", prompt="p", status=JobStatus.queued,
                    attempts=0, created_at=utcnow()))
        finally:
            await db.dispose()
    asyncio.run(queue_one())
    assert asyncio.run(ledger.settle(sqlite_url, 0.1)) == 1
