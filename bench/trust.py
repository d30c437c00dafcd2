"""`python -m bench trust`: honest miners and cheaters on one network (issue 18).

Wallets sign in like every bench miner (EIP-4361, every result signed), lease with the batch
protocol and answer with the demo model's own generator (miner/demo_model.py `respond`), so an
honest wallet gives exactly the answer an honest `mia-miner` on the demo model would. A tenth of
the wallets cheat, one switch each in turn: `canned` text, `truncate` (30 % of the honest
answer), `other-model` (another deterministic generator) and `copy` (replays answers it gave to
other conversations). Business clients chat over `POST /chat` (a business context, one or two
turns, answers of ~60 words) and check every answer they get against the honest one, which
they compute themselves from what they sent and saw. Canaries (`mia canary add`) are loaded
before the run with the honest answers as references: the demo generator is the trusted run.

What it reports, from the wallets' and the clients' own records (so no number depends on the
server telling the truth about itself), next to the server's public record of each wallet
(`GET /miners/{address}`):
- per cheater: jobs it served (results the server accepted) before it was suspended, when,
  why, and how many of its answers businesses saw;
- honest wallets wrongly penalised: suspended, or with a failed check (a failed check forfeits
  the job's credit), or credited fewer jobs than they answered;
- the inference spent on checks as a share of all inference: every answer generated, in words
  (the demo model's tokens), minus the one answer each business job got.

The run fails (non-zero) unless every cheater is suspended, answers businesses saw from
cheaters are at most 1 % of all answers they saw, no honest wallet was penalised, and checks
cost at most 10 % of the inference.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import multiprocessing as mp
import random
import secrets
import subprocess
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import aiohttp
import httpx

from app.config import Settings
from bench import ledger
from bench.run import pct
from bench.signer import Wallet
from bench.system import Spec, System
from bench.wire import backoff
from miner.demo_model import CHEATS, DemoState, respond
from miner.prompt import build_messages, job_sampling

SPAWN = mp.get_context("spawn")
MAX_TOKENS = 512  # the reference miner's default cap (MIA_MINER_MAX_TOKENS)
WORDS = 60  # words per answer: long enough that a copy or another model's text stands out
# The issue's bar.
MAX_CHEATER_SHARE = 0.01
MAX_CHECK_SHARE = 0.10

QUESTIONS = (
    "Where is my parcel", "How do I return a damaged item", "Can I change my delivery address",
    "Why was I charged twice", "How do I reset my password", "When does my plan renew",
    "Can I cancel my subscription", "The app crashes when I log in", "Do you ship abroad",
    "My discount code does not work", "How long does a refund take", "Is the warranty valid",
    "The screen stays black after the update", "Can I pick up my order in the store",
    "How do I add a second user to my account", "My invoice shows the wrong company name",
)
CONTEXTS = (
    "You are the support assistant of Acme Parcels. Be brief and friendly.",
    "You answer for Northwind Telecom. Never promise refunds; offer a ticket instead.",
    "Support desk of Lumen Software. Ask for the app version when something crashes.",
    "Helpdesk of Fjord Outdoor Store. Orders ship within two business days.",
)


@dataclass
class TrustPlan:
    honest: int = 36
    cheaters: list[str] = field(default_factory=lambda: list(CHEATS))  # one wallet each
    clients: int = 24
    duration_s: float = 60.0  # the shortest window; it runs on until the network is steady:
    max_s: float = 300.0  # ... every honest wallet out of probation, STEADY_GRACE_S, then
    steady_s: float = 45.0  # ... this long measured in steady state (or until max_s)
    warmup_s: float = 3.0
    rate: float = 0.0  # chats/s over all clients; 0 = closed loop
    think_s: float = 0.0  # simulated model seconds per lease request's batch
    words: int = WORDS
    batch_max: int = 8
    cheat_after: int = 0  # honest answers each cheater gives before it starts (a sleeper)
    canaries: int = 24  # canary prompts loaded before the run
    trusted: int = 0  # honest wallets named in TRUSTED_MINERS (the operator's own): no probation
    settle_s: float = 20.0  # after the window, how long check jobs still open may take
    spec: Spec = field(default_factory=Spec)


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def expected_answer(prompt: str, context: str | None, history: list[dict[str, str]]) -> str:
    """The honest answer to a job, as the business computes it from what it sent and saw."""
    messages = build_messages({"prompt": prompt, "context": context, "history": history})
    text, _, _ = respond(DemoState(), messages, MAX_TOKENS)
    return text


def canary_prompts(n: int, words: int) -> list[dict[str, str]]:
    """n canaries as `mia canary load` takes them: prompts and business contexts like the
    clients' own, each with the answer the demo model gives honestly (the trusted run)."""
    rng = random.Random(18)
    out = []
    for _ in range(n):
        prompt = f"{rng.choice(QUESTIONS)}? (order {rng.randrange(10**6):06d}) [demo:words={words}]"
        context = rng.choice(CONTEXTS)
        out.append({"prompt": prompt, "context": context,
                    "reference": expected_answer(prompt, context, [])})
    return out


# -- the load processes ---------------------------------------------------------------------


@dataclass
class WalletRecord:
    address: str
    cheat: str | None
    leased: int = 0  # jobs leased
    accepted: int = 0  # results the server took: jobs served (and credited, unless forfeited)
    rejected: Counter[str] = field(default_factory=Counter)  # results refused, by code
    words: int = 0  # words generated: this wallet's inference
    answers: dict[str, str] = field(default_factory=dict)  # job id -> digest of what it posted
    log: list[tuple[float, str, int]] = field(default_factory=list)  # (when, job id, words)
    first_lease_at: float | None = None
    suspended_at: float | None = None  # when the server first answered 403 miner_suspended
    errors: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        # (asdict alone would turn a Counter into one counting its (key, n) pairs)
        return asdict(self) | {"rejected": dict(self.rejected), "errors": dict(self.errors)}


@dataclass
class ChatRecord:
    job_id: str
    business: int
    expected: str  # digest of the honest answer
    seen: str | None  # digest of the answer the business got (None: failed or never came)
    words: int  # the seen answer's words
    status: str
    ms: float  # from sending the chat to holding its answer


@dataclass
class TrustRole:
    kind: str  # "wallets" or "clients"
    base_url: str
    cheats: list[str | None] = field(default_factory=list)  # wallets: one entry per wallet
    keys: list[bytes] = field(default_factory=list)  # wallets: their private keys
    cheat_after: int = 0
    batch_max: int = 8
    think_s: float = 0.0
    api_keys: list[str] = field(default_factory=list)  # clients: one API key per business
    clients: int = 0
    rate: float = 0.0
    words: int = WORDS
    seed: int = 0


def child_main(role: TrustRole, conn: Connection) -> None:
    asyncio.run(_child(role, conn))


async def _child(role: TrustRole, conn: Connection) -> None:
    timeout = aiohttp.ClientTimeout(total=120)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(role.base_url, connector=connector, timeout=timeout) as http:
        loop = asyncio.get_running_loop()
        if role.kind == "wallets":
            from bench.load import _sign_in

            signed = await asyncio.gather(*(_sign_in(http, Wallet(k)) for k in role.keys))
            records = [WalletRecord(w.address, cheat) for (w, _), cheat in
                       zip(signed, role.cheats, strict=True)]
            conn.send([(r.address, r.cheat) for r in records])
            await loop.run_in_executor(None, conn.recv)  # start
            tasks = [asyncio.create_task(_wallet(http, w, auth, rec, role))
                     for (w, auth), rec in zip(signed, records, strict=True)]
            await loop.run_in_executor(None, conn.recv)  # stop: the run has settled
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            conn.send([r.as_dict() for r in records])
        else:
            conn.send("ready")
            start, end_max = await loop.run_in_executor(None, conn.recv)
            # the end comes later, once the parent sees the network steady (at most end_max)
            end = [end_max]

            async def learn_end() -> None:
                end[0] = await loop.run_in_executor(None, conn.recv)
            told = asyncio.create_task(learn_end())
            rng = random.Random(role.seed)
            chats: list[ChatRecord] = []
            errors: Counter[str] = Counter()
            interval = role.clients / role.rate if role.rate else 0.0
            await asyncio.gather(*(_client(http, i, role, start, end, interval, rng, chats, errors)
                                   for i in range(role.clients)))
            await told
            conn.send({"chats": [asdict(c) for c in chats], "errors": dict(errors)})


async def _code(r: aiohttp.ClientResponse) -> str:
    with contextlib.suppress(Exception):
        return str((await r.json())["error"])
    return str(r.status)


async def _wallet(http: aiohttp.ClientSession, wallet: Wallet, auth: dict[str, str],
                  rec: WalletRecord, role: TrustRole) -> None:
    """One wallet: lease, answer with the demo model (its switch set), post, until suspended."""
    state = DemoState(cheat=rec.cheat, cheat_after=role.cheat_after if rec.cheat else 0)
    params = {"max": str(role.batch_max), "wait": "5"}
    while True:
        try:
            async with http.get("/job/batch", params=params, headers=auth) as r:
                if r.status == 204:
                    continue
                if r.status != 200:
                    code = await _code(r)
                    if code == "miner_suspended":
                        rec.suspended_at = rec.suspended_at or time.time()
                        return
                    rec.errors[f"lease {r.status} {code}"] += 1
                    await backoff(r)
                    continue
                jobs = (await r.json())["jobs"]
        except (aiohttp.ClientError, TimeoutError) as exc:
            rec.errors[f"lease {type(exc).__name__}"] += 1
            await asyncio.sleep(0.2)
            continue
        now = time.time()
        rec.first_lease_at = rec.first_lease_at or now
        rec.leased += len(jobs)
        if role.think_s:
            await asyncio.sleep(role.think_s)
        items = []
        for job in jobs:
            asked = job.get("max_tokens")
            cap = min(asked, MAX_TOKENS) if isinstance(asked, int) and asked > 0 else MAX_TOKENS
            stop = job_sampling(job).stop
            text, words, _ = respond(state, build_messages(job), cap, list(stop) if stop else None)
            rec.words += words
            rec.answers[job["job_id"]] = digest(text)
            rec.log.append((now, job["job_id"], words))
            items.append({"job_id": job["job_id"], "lease_id": job["lease_id"], "output": text,
                          "output_tokens": words,
                          "signature": wallet.sign_result(job["job_id"], text)})
        if await _post(http, auth, items, rec):
            return


async def _post(http: aiohttp.ClientSession, auth: dict[str, str], items: list[dict[str, Any]],
                rec: WalletRecord) -> bool:
    """POST /job/results, retried while the server cannot take it; True once suspended."""
    for _ in range(30):
        try:
            async with http.post("/job/results", json={"results": items}, headers=auth) as r:
                if r.status == 200:
                    for answer in (await r.json())["results"]:
                        if answer["status"] == "completed":
                            rec.accepted += 1
                        else:
                            rec.rejected[str(answer.get("error", "rejected"))] += 1
                    return False
                code = await _code(r)
                if code == "miner_suspended":
                    rec.suspended_at = rec.suspended_at or time.time()
                    rec.rejected[code] += len(items)
                    return True
                rec.errors[f"results {r.status} {code}"] += 1
                if r.status < 500 and r.status != 429:
                    return False
                await backoff(r)
        except (aiohttp.ClientError, TimeoutError) as exc:
            rec.errors[f"results {type(exc).__name__}"] += 1
            await asyncio.sleep(0.2)
    return False


async def _client(http: aiohttp.ClientSession, i: int, role: TrustRole, start: float,
                  end_box: list[float],
                  interval: float, rng: random.Random, chats: list[ChatRecord],
                  errors: Counter[str]) -> None:
    """One business's customer after another: a conversation of one or two turns each."""
    business = i % len(role.api_keys)
    auth = {"Authorization": f"Bearer {role.api_keys[business]}"}
    context = CONTEXTS[business % len(CONTEXTS)]
    spread = rng.random() * interval if interval else 0.0
    await asyncio.sleep(max(0.0, start - time.time()) + spread)
    next_start = time.time()
    while time.time() < end_box[0]:
        session = f"bench-{uuid.uuid4().hex}"
        history: list[dict[str, str]] = []
        for _turn in range(rng.choice((1, 1, 2))):
            if time.time() >= end_box[0]:
                break
            if interval:
                next_start += interval
                await asyncio.sleep(max(0.0, next_start - time.time()))
            prompt = (f"{rng.choice(QUESTIONS)}? (order {rng.randrange(10**6):06d}) "
                      f"[demo:words={role.words}]")
            expected = digest(expected_answer(prompt, context, history))
            sent = time.perf_counter()
            job = await _chat(http, auth, prompt, context, session, errors)
            if job is None:
                break
            response = job.get("response") if job["status"] == "completed" else None
            chats.append(ChatRecord(job["job_id"], business, expected,
                                    digest(response) if response is not None else None,
                                    len(response.split()) if response else 0, job["status"],
                                    round((time.perf_counter() - sent) * 1000, 1)))
            if response is None:
                break
            history += [{"role": "user", "content": prompt},
                        {"role": "assistant", "content": response}]


async def _chat(http: aiohttp.ClientSession, auth: dict[str, str], prompt: str, context: str,
                session: str, errors: Counter[str]) -> dict[str, Any] | None:
    """One turn; None if it could not be sent. Only a 429 is retried: after a 5xx or a dropped
    connection the turn may exist on the server, and the conversation's history (hence the
    honest answer the business expects) would be unknown, so the conversation ends there."""
    body = {"message": prompt, "context": context, "session_id": session}
    job: dict[str, Any] | None = None
    for _ in range(20):
        try:
            async with http.post("/chat", params={"wait": "30"}, json=body, headers=auth) as r:
                if r.status in (200, 202):
                    job = await r.json()
                    break
                errors[f"chat {r.status}"] += 1
                if r.status != 429:
                    return None
                await backoff(r)
        except (aiohttp.ClientError, TimeoutError) as exc:
            errors[f"chat {type(exc).__name__}"] += 1
            await asyncio.sleep(0.2)
            return None
    if job is None:
        return None
    deadline = time.time() + 120
    while job["status"] not in ("completed", "failed") and time.time() < deadline:
        try:
            async with http.get(f"/chat/{job['job_id']}", params={"wait": "30"},
                                headers=auth) as r:
                if r.status == 200:
                    job = await r.json()
                    continue
                errors[f"read {r.status}"] += 1
                await backoff(r)
        except (aiohttp.ClientError, TimeoutError) as exc:
            errors[f"read {type(exc).__name__}"] += 1
            await asyncio.sleep(0.2)
    return job


# -- the run ----------------------------------------------------------------------------------


def wallet_mix(plan: TrustPlan) -> list[str | None]:
    """Honest wallets with the cheaters spread among them (so no cheater is always first)."""
    mix: list[str | None] = [None] * plan.honest
    step = max(1, len(mix) // max(1, len(plan.cheaters)))
    for k, cheat in enumerate(plan.cheaters):
        mix.insert(min(len(mix), k * (step + 1) + step // 2), cheat)
    return mix


def load_canaries(system: System, canaries: list[dict[str, str]]) -> dict[str, Any]:
    """`mia canary load FILE` (JSON lines), as an operator loads them."""
    path = system.tmp / "canaries.jsonl"
    path.write_text("".join(json.dumps(c) + "\n" for c in canaries))
    done = subprocess.run(system._mia("canary", "load", str(path)), env=system.env,
                          capture_output=True, text=True)
    why = (done.stderr.strip().splitlines() or [""])[-1][:300]
    return {"asked": len(canaries), "added": len(canaries) if done.returncode == 0 else 0,
            "error": None if done.returncode == 0 else f"exit {done.returncode}: {why}"}


STEADY_GRACE_S = 30.0  # a wallet on probation announces itself for 30 s (app/trust): shadow
# copies of business jobs go on that long after the last one graduated


def until_steady(plan: TrustPlan, base_url: str, start: float, probationers: list[str]) -> float:
    """When the clients stop: once every honest wallet on probation has graduated (polled on
    its public record), STEADY_GRACE_S and then plan.steady_s later, but not before
    plan.duration_s nor after plan.max_s from the start."""
    floor, ceiling = start + plan.duration_s, start + plan.max_s
    waiting = set(probationers)
    with httpx.Client(base_url=base_url, timeout=30) as http:
        while waiting and time.time() < ceiling - STEADY_GRACE_S - plan.steady_s:
            time.sleep(2.0)
            for address in list(waiting):
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    r = http.get(f"/miners/{address}")
                    if r.status_code == 200 and r.json().get("graduated_at"):
                        waiting.discard(address)
    if waiting:
        return max(floor, min(ceiling, time.time()))
    return min(ceiling, max(floor, time.time() + STEADY_GRACE_S + plan.steady_s))


def public_records(base_url: str, addresses: list[str]) -> dict[str, Any]:
    """GET /miners/{address} for each wallet: the network's public record of it."""
    out: dict[str, Any] = {}
    with httpx.Client(base_url=base_url, timeout=30) as http:
        for address in addresses:
            try:
                r = http.get(f"/miners/{address}")
                out[address] = r.json() if r.status_code == 200 else {
                    "unavailable": f"HTTP {r.status_code}"}
            except httpx.HTTPError as exc:
                out[address] = {"unavailable": type(exc).__name__}
    return out


def _start(role: TrustRole) -> tuple[Any, Connection]:
    parent, child = SPAWN.Pipe()
    proc = SPAWN.Process(target=child_main, args=(role, child), daemon=True)
    proc.start()
    return proc, parent


def execute(plan: TrustPlan) -> dict[str, Any]:
    from app.accounts.keys import issue_api_key

    cheats = wallet_mix(plan)
    keys = [secrets.token_bytes(32) for _ in cheats]
    # The operator's own wallets: the first `trusted` honest ones skip probation.
    trusted = [Wallet(k).address for k, cheat in zip(keys, cheats, strict=True)
               if cheat is None][:plan.trusted]
    if trusted:
        plan.spec.env["TRUSTED_MINERS"] = ",".join(trusted)
    system = System(plan.spec).start()
    procs: list[Any] = []
    try:
        db_url = system.env["DATABASE_URL"]
        canaries = load_canaries(system, canary_prompts(plan.canaries, plan.words))
        api_keys = [asyncio.run(issue_api_key(db_url, f"business-{i}", "chat"))
                    for i in range(len(CONTEXTS))]
        wallets_proc, wallets = _start(TrustRole(
            "wallets", system.base_url, cheats=cheats, keys=keys, cheat_after=plan.cheat_after,
            batch_max=plan.batch_max, think_s=plan.think_s))
        clients_proc, clients = _start(TrustRole(
            "clients", system.base_url, api_keys=api_keys, clients=plan.clients,
            rate=plan.rate, words=plan.words))
        procs = [wallets_proc, clients_proc]
        who = dict(wallets.recv())
        clients.recv()
        start = time.time() + plan.warmup_s
        wallets.send("start")
        clients.send((start, start + plan.max_s))
        end = until_steady(plan, system.base_url, start,
                           [a for a, cheat in who.items() if cheat is None and a not in trusted])
        clients.send(end)
        window = (start, end)
        client_report = clients.recv()
        # the check jobs still open (a re-run, a tie-break) may yet suspend someone
        still_open = asyncio.run(ledger.settle(db_url, plan.settle_s))
        wallets.send("stop")
        records = wallets.recv()
        for proc in procs:
            proc.join(10)
        public = public_records(system.base_url, list(who))
        chats = client_report["chats"]
        audit = asyncio.run(business_audit(db_url, [c["job_id"] for c in chats]))
        audit["open_after_settle"] = still_open
        audit["server_split"] = asyncio.run(server_split(db_url))
        since = steady_since(public, [a for a, cheat in who.items()
                                      if cheat is None and a not in trusted], window)
        if since is not None:
            audit["server_split_steady"] = asyncio.run(server_split(db_url, since, window[1]))
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
        system.stop()
    return report(plan, records, chats, public, canaries, audit, client_report["errors"],
                  trusted, window)


async def business_audit(database_url: str, job_ids: list[str]) -> dict[str, Any]:
    """The businesses' jobs in the database: every one terminal, answered at most once."""
    from sqlalchemy import bindparam, text

    from app.db import Database

    db = Database(database_url)
    by_status: Counter[str] = Counter()
    duplicated = 0
    try:
        async with db.sessions() as session:
            for i in range(0, len(job_ids), 2000):
                part = job_ids[i:i + 2000]
                rows = (await session.execute(text(
                    "SELECT status, count(*) FROM chat_jobs WHERE id IN :ids GROUP BY status")
                    .bindparams(bindparam("ids", expanding=True)), {"ids": part})).all()
                by_status.update({str(k): int(n) for k, n in rows})
                duplicated += (await session.execute(text(
                    "SELECT count(*) FROM (SELECT job_id FROM chat_logs WHERE role = 'assistant' "
                    "AND job_id IN :ids GROUP BY job_id HAVING count(*) > 1) t")
                    .bindparams(bindparam("ids", expanding=True)), {"ids": part})).scalar_one()
    finally:
        await db.dispose()
    known = sum(by_status.values())
    return {"jobs": len(job_ids), "by_status": dict(by_status),
            "lost": len(job_ids) - known + by_status.get("queued", 0)
            + by_status.get("assigned", 0),
            "duplicated": int(duplicated), "failed_without_reason": 0}


async def server_split(database_url: str, since: float | None = None,
                       until: float | None = None) -> dict[str, Any]:
    """The database's count of answered jobs and their tokens by purpose (business jobs have
    none; check jobs "verify" or "canary"), of the jobs created between `since` and `until`
    (epoch seconds) if given: a check job counts when the job it checks was answered, not when
    a wallet got round to it."""
    from datetime import UTC, datetime

    from sqlalchemy import func, select

    from app.db import Database
    from app.models import ChatJob, JobStatus

    purpose = func.coalesce(ChatJob.purpose, "business")
    query = (select(purpose, func.count(), func.coalesce(func.sum(ChatJob.output_tokens), 0))
             .where(ChatJob.status == JobStatus.completed).group_by(purpose))
    if since is not None:
        query = query.where(ChatJob.created_at >= datetime.fromtimestamp(since, UTC))
    if until is not None:
        query = query.where(ChatJob.created_at <= datetime.fromtimestamp(until, UTC))
    db = Database(database_url)
    try:
        async with db.sessions() as session:
            rows = (await session.execute(query)).all()
    finally:
        await db.dispose()
    split = {str(k): {"jobs": int(n), "tokens": int(t)} for k, n, t in rows}
    total = sum(v["tokens"] for v in split.values())
    checks = total - split.get("business", {}).get("tokens", 0)
    return {"by_purpose": split,
            "check_share": round(checks / total, 4) if total else None}


def report(plan: TrustPlan, records: list[dict[str, Any]], chats: list[dict[str, Any]],
           public: dict[str, Any], canaries: dict[str, Any], audit: dict[str, Any],
           client_errors: dict[str, int], trusted: list[str] | None = None,
           window: tuple[float, float] | None = None) -> dict[str, Any]:
    """The figures issue 18 asks for, from the wallets' and clients' own records."""
    seen = [c for c in chats if c["seen"] is not None]
    business_ids = {c["job_id"] for c in chats}
    posted: dict[tuple[str, str], str] = {}  # (job id, answer digest) -> address that posted it
    for rec in records:
        for job_id, d in rec["answers"].items():
            posted.setdefault((job_id, d), rec["address"])
    cheat_of = {r["address"]: r["cheat"] for r in records}
    seen_from: Counter[str] = Counter()
    wrong_seen = 0
    wrong_from_honest = 0
    for c in seen:
        author = posted.get((c["job_id"], c["seen"]))
        if author is not None and cheat_of.get(author):
            seen_from[author] += 1
        if c["seen"] != c["expected"]:
            wrong_seen += 1
            if author is None or not cheat_of.get(author):
                wrong_from_honest += 1

    cheaters = []
    for rec in records:
        if not rec["cheat"]:
            continue
        pub = public.get(rec["address"], {})
        suspended_after = (round(rec["suspended_at"] - rec["first_lease_at"], 1)
                           if rec["suspended_at"] and rec["first_lease_at"] else None)
        cheaters.append({
            "address": rec["address"], "kind": rec["cheat"],
            "jobs_served": rec["accepted"], "leased": rec["leased"],
            "business_jobs_answered": sum(1 for j in rec["answers"] if j in business_ids),
            "rejected": dict(rec["rejected"]),
            "answers_businesses_saw": seen_from[rec["address"]],
            "suspended": bool(pub.get("suspended")),
            "refused_as_suspended": rec["suspended_at"] is not None,
            "suspended_by_server_record": pub.get("suspended"),
            "suspended_after_s": suspended_after,
            "suspended_reason": pub.get("suspended_reason"),
            "checks": pub.get("checks"), "score": pub.get("score"),
        })
    honest = [r for r in records if not r["cheat"]]
    penalised = []
    for rec in honest:
        pub = public.get(rec["address"], {})
        checks = pub.get("checks") or {}
        why = []
        if rec["suspended_at"] is not None or pub.get("suspended"):
            why.append(f"suspended ({pub.get('suspended_reason')})")
        if checks.get("failed"):
            why.append(f"{checks['failed']} failed check(s): credit forfeited")
        if isinstance(pub.get("jobs_done"), int) and pub["jobs_done"] < rec["accepted"]:
            why.append(f"credited {pub['jobs_done']} of {rec['accepted']} jobs served")
        if why:
            penalised.append({"address": rec["address"], "why": why})
    total_words = sum(r["words"] for r in records)
    business_words = sum(c["words"] for c in seen)
    check_words = max(0, total_words - business_words)
    steady = _steady(records, honest, public, business_ids, set(trusted or []), window,
                     audit.get("server_split_steady"))
    unavailable = sorted({str(p.get("unavailable")) for p in public.values()
                          if isinstance(p, dict) and "unavailable" in p})
    return {
        "scenario": "trust", "database": plan.spec.database,
        "api_processes": plan.spec.api_procs,
        "wallets": len(records), "honest": len(honest), "cheaters_n": len(cheaters),
        "cheating_share": round(len(cheaters) / len(records), 3) if records else None,
        "clients": plan.clients, "words": plan.words,
        "duration_s": round(window[1] - window[0], 1) if window else plan.duration_s,
        "cheat_after": plan.cheat_after, "trusted_wallets": len(trusted or []),
        "settings": {k: v for k, v in plan.spec.env.items() if k != "TRUSTED_MINERS"},
        "canaries": canaries,
        "answers_seen": len(seen),
        "answers_per_s": round(len(seen) / ((window[1] - window[0]) if window
                                            else plan.duration_s), 1),
        "e2e_ms": {"p50": pct([c["ms"] for c in seen], 50),
                   "p99": pct([c["ms"] for c in seen], 99)},
        "answers_failed": sum(1 for c in chats if c["seen"] is None),
        "wrong_answers_seen": wrong_seen,
        "wrong_answers_not_from_a_cheater": wrong_from_honest,
        "cheater_answers_seen": sum(seen_from.values()),
        "cheater_share": round(sum(seen_from.values()) / len(seen), 4) if seen else None,
        "cheaters": cheaters,
        "honest_penalised": penalised,
        "honest_on_probation_at_end": sum(1 for r in honest
                                          if (public.get(r["address"]) or {}).get("probation")),
        "honest_checks_passed_each": sorted(
            ((public.get(r["address"]) or {}).get("checks") or {}).get("passed", 0)
            for r in honest),
        "honest_checks": {
            "passed": sum(((public.get(r["address"]) or {}).get("checks") or {}).get("passed", 0)
                          for r in honest),
            "failed": sum(((public.get(r["address"]) or {}).get("checks") or {}).get("failed", 0)
                          for r in honest)},
        "inference": {"words_total": total_words, "words_business": business_words,
                      "words_checks": check_words,
                      "check_share_run": (round(check_words / total_words, 4) if total_words
                                          else None),
                      "steady": steady,
                      # the bar: what checks cost once every honest wallet is out of probation
                      # (probation is paid once per wallet: "probation" above); a run too short
                      # to reach that is held to its whole-run share
                      "check_share": (
                          steady["check_share_by_creation"] if steady
                          and steady["check_share_by_creation"] is not None
                          else round(check_words / total_words, 4) if total_words else None)},
        "public_record_unavailable": unavailable,
        "errors": dict(client_errors) | _sum_errors(records),
        "audit": audit,
    }


STEADY_MIN_S = 10.0  # the shortest steady window worth a figure


def _epoch(value: Any) -> float | None:
    from datetime import datetime

    if not isinstance(value, str):
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def steady_since(public: dict[str, Any], probationers: list[str],
                 window: tuple[float, float] | None) -> float | None:
    """STEADY_GRACE_S after the last of `probationers` graduated (its public record's
    graduated_at); None if one never did, or if less than STEADY_MIN_S of the window is left."""
    if window is None:
        return None
    times = []
    for address in probationers:
        at = _epoch((public.get(address) or {}).get("graduated_at"))
        if at is None:
            return None
        times.append(at)
    since = max(times, default=window[0]) + (STEADY_GRACE_S if times else 0.0)
    return since if window[1] - since >= STEADY_MIN_S else None


def _steady(records: list[dict[str, Any]], honest: list[dict[str, Any]], public: dict[str, Any],
            business_ids: set[str], trusted: set[str],
            window: tuple[float, float] | None,
            by_creation: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The inference on checks from STEADY_GRACE_S after the last honest wallet left probation
    (its graduated_at, from its public record) to the end of the window: the running cost, after
    probation's one-time cost per wallet. None if some honest wallet never graduated, or if
    what is left of the window is shorter than STEADY_MIN_S."""
    probationers = [r["address"] for r in honest if r["address"] not in trusted]
    since = steady_since(public, probationers, window) if honest else None
    if since is None or window is None:
        return None
    total = business = total_before = business_before = 0
    counted: set[str] = set()
    for rec in records:
        for at, job_id, words in rec["log"]:
            first = job_id in business_ids and job_id not in counted
            if first:
                counted.add(job_id)
            if since <= at <= window[1]:
                total += words
                business += words if first else 0
            elif at < since:
                total_before += words
                business_before += words if first else 0
    share = (total - business) / total if total else None
    # Probation's one-time cost: the checks before `since` beyond what the running share would
    # have cost for the business answers of that time, per wallet that went through it.
    went_through = len(probationers) + sum(1 for r in records if r["cheat"])
    extra = ((total_before - business_before) - business_before * share / (1 - share)
             if share is not None and share < 1 else None)
    return {"from_s": round(since - window[0], 1), "seconds": round(window[1] - since, 1),
            "words_total": total, "words_checks": total - business,
            "business_jobs": sum(1 for r in records for at, j, _ in r["log"]
                                 if since <= at <= window[1] and j in business_ids),
            "check_share": round(share, 4) if share is not None else None,
            "probation_words_per_wallet": (round(extra / went_through) if extra is not None
                                           and went_through else None),
            # the bar: the same window, each check job counted with the job it checks (the
            # jobs created in it, by the database), so a backlog of probation's shadow copies
            # answered late does not count as the running cost
            "check_share_by_creation": (by_creation or {}).get("check_share"),
            "by_creation": by_creation}


def _sum_errors(records: list[dict[str, Any]]) -> dict[str, int]:
    out: Counter[str] = Counter()
    for r in records:
        out.update(r["errors"])
    return dict(out)


def problems(r: dict[str, Any]) -> list[str]:
    """Why the trust run fails: issue 18's "done when", plus the audit of every business job."""
    out = []
    if r["public_record_unavailable"]:
        why = ", ".join(r["public_record_unavailable"])
        out.append(f"GET /miners/{{address}} unavailable: {why}")
    for c in r["cheaters"]:
        if not c["suspended"]:
            out.append(f"cheater {c['kind']} {c['address']} was not suspended "
                       f"({c['jobs_served']} jobs served)")
    if not r["answers_seen"]:
        out.append("no business saw an answer")
    elif r["cheater_share"] > MAX_CHEATER_SHARE:
        out.append(f"businesses saw {r['cheater_answers_seen']} cheaters' answers of "
                   f"{r['answers_seen']} ({r['cheater_share']:.2%}; at most "
                   f"{MAX_CHEATER_SHARE:.0%})")
    for p in r["honest_penalised"]:
        out.append(f"honest wallet {p['address']} penalised: {'; '.join(p['why'])}")
    share = r["inference"]["check_share"]
    if share is None or share > MAX_CHECK_SHARE:
        out.append(f"checks cost {share} of the inference (at most {MAX_CHECK_SHARE:.0%})")
    if r["wrong_answers_not_from_a_cheater"]:
        out.append(f"{r['wrong_answers_not_from_a_cheater']} wrong answer(s) seen that no "
                   "cheater posted (the bench's expected answer is off)")
    a = r["audit"]
    for key in ("lost", "duplicated", "failed_without_reason"):
        if a[key]:
            out.append(f"{a[key]} job(s) {key.replace('_', ' ')}")
    return out


def table(r: dict[str, Any]) -> str:
    inf = r["inference"]
    rows = [
        ("scenario", f"trust ({r['database']}, uvicorn x{r['api_processes']}): {r['wallets']} "
                     f"wallets, {r['cheaters_n']} cheating ({r['cheating_share']:.0%}), "
                     f"{r['clients']} clients, {r['duration_s']} s"),
        ("settings", ", ".join(f"{k}={v}" for k, v in sorted(r["settings"].items())) or "defaults"),
        ("canaries", f"{r['canaries']['added']} of {r['canaries']['asked']} loaded"
                     + (f" ({r['canaries']['error']})" if r["canaries"].get("error") else "")),
        ("trusted wallets", f"{r['trusted_wallets']} (TRUSTED_MINERS); the rest start on "
                            "probation"),
        ("answers businesses saw", f"{r['answers_seen']} ({r['answers_per_s']}/s, end-to-end "
                                   f"p50 {r['e2e_ms']['p50']} ms, p99 {r['e2e_ms']['p99']} ms; "
                                   f"{r['answers_failed']} failed), wrong "
                                   f"{r['wrong_answers_seen']}, from cheaters "
                                   f"{r['cheater_answers_seen']} ({_pct(r['cheater_share'])})"),
    ]
    for c in r["cheaters"]:
        rows.append((f"cheater {c['kind']}",
                     f"{c['jobs_served']} jobs served, {c['answers_businesses_saw']} seen by "
                     f"businesses, suspended {'yes' if c['suspended'] else 'NO'}"
                     + (f" after {c['suspended_after_s']} s" if c["suspended_after_s"] else "")
                     + (f" ({c['suspended_reason']})" if c["suspended_reason"] else "")))
    rows += [
        ("honest wallets penalised", f"{len(r['honest_penalised'])} of {r['honest']}; checks "
                                     f"passed {r['honest_checks']['passed']}, failed "
                                     f"{r['honest_checks']['failed']}; "
                                     f"{r['honest_on_probation_at_end']} still on probation"),
        ("inference on checks", f"{_pct(inf['check_share_run'])} of the run ("
                                f"{inf['words_checks']} of {inf['words_total']} words)"
                                + _split(r["audit"])),
        ("... once out of probation", _steady_row(inf["steady"])),
        ("errors", ", ".join(f"{k}: {v}" for k, v in sorted(r["errors"].items())) or "none"),
        ("jobs: lost / duplicated", f"{r['audit']['lost']} / {r['audit']['duplicated']}  "
                                    f"{r['audit']['by_status']}"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)


def _steady_row(st: dict[str, Any] | None) -> str:
    if st is None:
        return "n/a: some honest wallet was still on probation at the end (or too near it)"
    return (f"{_pct(st['check_share_by_creation'])} of the tokens of jobs created in the last "
            f"{st['seconds']} s (from {st['from_s']} s in; by lease time "
            f"{_pct(st['check_share'])}: {st['words_checks']} of {st['words_total']} words, "
            f"{st['business_jobs']} business jobs); before it, probation cost about "
            f"{st['probation_words_per_wallet']} words per new wallet")


def _split(audit: dict[str, Any]) -> str:
    split = audit.get("server_split")
    if not split:
        return ""
    jobs = ", ".join(f"{k} {v['jobs']}" for k, v in sorted(split["by_purpose"].items()))
    return f"; server's count: {_pct(split['check_share'])} of tokens, jobs {jobs}"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2%}"


def dumps(result: dict[str, Any]) -> str:
    return json.dumps(result, indent=2) + "\n"


def plan_from(args: Any) -> TrustPlan:
    """The trust run's plan from `python -m bench trust` flags (bench/__main__.py): --miners is
    the number of wallets, a tenth of them (at least one of each kind in turn) cheating."""
    wallets = args.miners or 40
    n_cheat = max(1, round(wallets / 10))
    cheaters = [CHEATS[i % len(CHEATS)] for i in range(n_cheat)]
    plan = TrustPlan(honest=wallets - n_cheat, cheaters=cheaters,
                     spec=Spec(database=args.db, postgres_url=args.postgres_url,
                               api_procs=args.api_procs, env=dict(TRUST_ENV)))
    for arg, key in (("clients", "clients"), ("duration", "duration_s"), ("warmup", "warmup_s"),
                     ("rate", "rate"), ("think", "think_s"), ("batch_max", "batch_max"),
                     ("cheat_after", "cheat_after"), ("trusted", "trusted")):
        if getattr(args, arg, None) is not None:
            setattr(plan, key, getattr(args, arg))
    return plan


# What the trust run changes from the server's defaults: the demo model's tokens are words.
# Everything issue 18 adds (VERIFY_SAMPLE_RATE, CANARY_RATE, PROBATION_JOBS,
# REPUTATION_SUSPEND_BELOW) runs at its default unless the environment says otherwise.
TRUST_ENV = {"TOKENIZER": "words",
             # the server's own default, over the load scenarios' 0 (bench/system.py)
             "PROBATION_JOBS": str(Settings.model_fields["probation_jobs"].default)}


def main(args: Any, results: Any) -> int:
    """One trust run from parsed flags; writes <results>/<name>.json; 0 if it passed."""
    plan = plan_from(args)
    result = execute(plan)
    result["name"] = args.name or "trust"
    result["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(table(result), flush=True)
    wrong = problems(result)
    result["problems"] = wrong
    if not args.no_save:
        results.mkdir(exist_ok=True)
        suffix = "" if args.db == "postgres" else f"-{args.db}"
        (results / f"{result['name']}{suffix}.json").write_text(dumps(result))
    for problem in wrong:
        print(f"  FAILED: {problem}", flush=True)
    print(flush=True)
    return 1 if wrong else 0
