"""Typed SQLAlchemy 2.0 models. The seed's five models keep their columns; the rest is new."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import (BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text,
                        TypeDecorator, UniqueConstraint, text)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, synonym


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Stored as naive UTC (portable across SQLite and PostgreSQL), always returned tz-aware."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):  # type: ignore[no-untyped-def]
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return stored_utc(value)

    def process_result_value(self, value, dialect):  # type: ignore[no-untyped-def]
        return read_utc(value)


def stored_utc(t: datetime | None) -> datetime | None:
    """How a UTCDateTime column stores an aware time: naive UTC (for SQL run without the ORM)."""
    return None if t is None else t.astimezone(UTC).replace(tzinfo=None)


def read_utc(t: datetime | None) -> datetime | None:
    """A stored (naive UTC) time, aware again."""
    return None if t is None else t.replace(tzinfo=UTC)


class USDAmount(TypeDecorator[Decimal]):
    """Decimal dollars with six places, stored as integer micro-dollars (BIGINT).

    Exact on every database (SQLite's NUMERIC is a float) and SUM() stays exact, in SQL, on
    both. Floats and more than six places are refused rather than rounded.
    """

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value, dialect):  # type: ignore[no-untyped-def]
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, Decimal | int):
            raise TypeError(f"USD amounts are Decimal, not {type(value).__name__}")
        micro = Decimal(value) * MICRO_PER_USD
        if micro != micro.to_integral_value():
            raise ValueError(f"USD amount {value} has more than six decimal places")
        return int(micro)

    def process_result_value(self, value, dialect):  # type: ignore[no-untyped-def]
        if value is None:
            return None
        return (Decimal(int(value)) / MICRO_PER_USD).quantize(USD_PLACES)


MICRO_PER_USD = Decimal(1_000_000)
USD_PLACES = Decimal("0.000001")
USD = USDAmount()


class Base(DeclarativeBase):
    pass


class JobStatus(enum.StrEnum):
    queued = "queued"
    assigned = "assigned"
    processing = "processing"  # idle jobs only: claimed by the worker for RunPod
    completed = "completed"
    failed = "failed"


class Business(Base):
    __tablename__ = "businesses"
    __table_args__ = (Index("uq_businesses_deposit_ref", "deposit_ref", unique=True),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    contact_email: Mapped[str | None] = mapped_column(String(320))
    contact_phone: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    # Accounts (app/accounts): the balance is the sum of the business's ledger entries; this
    # column is that sum kept in step by the ledger alone, in the transaction that adds an entry
    # (one conditional UPDATE: a hold that would take it below zero changes nothing), so holds
    # serialize on the business's row. tests/accounts check it against SUM(entries).
    balance_usd: Mapped[Decimal] = mapped_column(USD, default=Decimal(0), server_default="0")
    low_balance_usd: Mapped[Decimal | None] = mapped_column(USD)  # GET /account warns below it
    retention_days: Mapped[int | None] = mapped_column(Integer)  # overrides CHAT_RETENTION_DAYS
    # what an on-chain deposit carries to say it is this business's (app/accounts/deposits.py)
    deposit_ref: Mapped[str | None] = mapped_column(String(32))
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # keys revoked, content erased


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    business_id: Mapped[int] = mapped_column(ForeignKey("businesses.id"), index=True)
    prefix: Mapped[str] = mapped_column(String(16))  # shown in listings; the key itself never is
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex
    scopes: Mapped[str] = mapped_column(String(200), default="chat")  # comma-separated
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # the most this key may spend in a calendar month (UTC), holds included; NULL: no limit
    monthly_limit_usd: Mapped[Decimal | None] = mapped_column(USD)

    @property
    def scope_set(self) -> frozenset[str]:
        return frozenset(s for s in self.scopes.split(",") if s)


class Miner(Base):
    __tablename__ = "miners"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    address: Mapped[str] = mapped_column(String(42), unique=True)  # EIP-55 checksummed wallet
    # Seed column. Miners now prove their wallet instead of holding a shared key; kept nullable.
    auth_key: Mapped[str | None] = mapped_column(String(64))
    job_count: Mapped[int] = mapped_column(Integer, default=0)
    tokens_generated: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_active: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Set by an operator: the wallet's sessions are refused on miner endpoints and at sign-in
    suspended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Trust (app/trust): why it was suspended automatically (NULL for an operator's suspension),
    # when it left probation, and its reputation: the decayed weight of checks passed and failed
    # (a Beta posterior's evidence; score = (1 + passed) / (2 + passed + failed)), and the plain
    # counts of checks passed and failed (business feedback not included: it never graduates)
    suspended_reason: Mapped[str | None] = mapped_column(String(500))
    graduated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    rep_passed: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    rep_failed: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    checks_passed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    checks_failed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class AuthToken(Base):
    """A bearer session issued after an EIP-4361 sign-in. Only the hash is stored."""

    __tablename__ = "auth_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    address: Mapped[str] = mapped_column(String(42), index=True)
    miner_id: Mapped[int | None] = mapped_column(ForeignKey("miners.id"))
    roles: Mapped[str] = mapped_column(String(100))  # comma-separated: miner, operator
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)  # the hourly prune
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ChatJob(Base):
    __tablename__ = "chat_jobs"
    __table_args__ = (
        Index("ix_chat_jobs_status_lease", "status", "lease_expires_at"),
        Index("ix_chat_jobs_status_created", "status", "created_at"),
        # /network, /metrics and token drift count jobs completed since a moment
        Index("ix_chat_jobs_status_completed", "status", "completed_at"),
        # MINER_MAX_LEASES counts a wallet's leases on every lease request
        Index("ix_chat_jobs_assigned_miner", "miner_id", postgresql_where=text("status = 'assigned'"),
              sqlite_where=text("status = 'assigned'")),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # uuid4
    business_id: Mapped[int | None] = mapped_column(ForeignKey("businesses.id"), index=True)
    session_id: Mapped[str] = mapped_column(String(128), index=True)
    prompt: Mapped[str] = mapped_column(Text)
    context: Mapped[str | None] = mapped_column(Text)
    # /v1/chat/completions: the model asked for (only miners declaring it lease the job; NULL:
    # any miner) and the sampling/delivery options as JSON (app/chat/options.py)
    model: Mapped[str | None] = mapped_column(String(128))
    options: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.queued)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # deliveries so far
    lease_id: Mapped[str | None] = mapped_column(String(36))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    miner_id: Mapped[int | None] = mapped_column(ForeignKey("miners.id"))
    response: Mapped[str | None] = mapped_column(Text)
    output_tokens: Mapped[int | None] = mapped_column(Integer)  # the server's count
    reported_tokens: Mapped[int | None] = mapped_column(Integer)  # the miner's count, never credited
    signature: Mapped[str | None] = mapped_column(Text)  # miner's wallet signature, 0x-hex
    # why the miner's model server stopped ("stop", "length", "tool_calls"), signed with the
    # output; NULL when the miner did not say
    finish_reason: Mapped[str | None] = mapped_column(String(16))
    failure_reason: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # who last let this job's lease run out or gave it back, and when: that miner may not lease
    # it again for RETURNED_JOB_COOLDOWN_S (app/leases/rules.py), so one wallet cannot spend
    # every delivery of a job by taking it back again and again
    returned_by: Mapped[int | None] = mapped_column(Integer)
    returned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    assigned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Trust (app/trust): NULL for a business's job; "verify" (a re-run of origin_job_id by
    # another wallet: a sampled check, a probationary wallet's shadow work, or a tie-break) or
    # "canary" (canary_id's prompt, compared with its reference). Such jobs are never billed,
    # never shown to a business and not counted as traffic; check_model is the model they must
    # run on ('' for miners declaring none), which picks their queue list.
    purpose: Mapped[str | None] = mapped_column(String(16))
    origin_job_id: Mapped[str | None] = mapped_column(String(36), index=True)
    canary_id: Mapped[int | None] = mapped_column(Integer)
    check_model: Mapped[str | None] = mapped_column(String(128))
    # Accounts: the key that submitted it (usage by key), and what its submission held on the
    # business's balance (the ledger's hold entry, copied so completion knows without a read;
    # NULL: the job was not priced, nothing to charge or release)
    api_key_id: Mapped[int | None] = mapped_column(Integer)
    hold_usd: Mapped[Decimal | None] = mapped_column(USD)
    # set when the session's content was erased (DELETE /chat/sessions/{id}, retention,
    # business removal): prompt, context, response and options are gone, billing fields stay
    erased_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ChatSession(Base):
    """A business's chat session. Session ids are the business's own names, scoped to it: two
    businesses may both use "abc" and each sees only its own (UNIQUE (session_id, business_id):
    session_id first, so a lookup by it uses the index whatever `business_id IS NULL` does).
    Anonymous sessions (business_id NULL) are ids the server handed out (uuid4), never chosen by
    the caller, so NULLs being distinct in the constraint does not matter."""

    __tablename__ = "chat_sessions"
    __table_args__ = (UniqueConstraint("session_id", "business_id",
                                       name="uq_chat_sessions_business_session"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    business_id: Mapped[int | None] = mapped_column(ForeignKey("businesses.id"))
    session_id: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ChatLog(Base):
    __tablename__ = "chat_logs"
    __table_args__ = (Index("ix_chat_logs_session_id_id", "session_id", "id"),
                      # a business's turns: retention, erasure, export (migration 0018)
                      Index("ix_chat_logs_business_id_timestamp", "business_id", "timestamp"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[str] = mapped_column(String(128))
    message: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(String(16))  # user | assistant
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    business_id: Mapped[int | None] = mapped_column(ForeignKey("businesses.id"))
    job_id: Mapped[str | None] = mapped_column(ForeignKey("chat_jobs.id"), index=True)


class IdempotencyKey(Base):
    """An Idempotency-Key a business sent with a request that created a job (app/idempotency.py),
    written in the job's own transaction: a retry with the same key gets that job, even after
    Redis lost everything. Kept IDEMPOTENCY_KEY_TTL_S, then pruned by the worker."""

    __tablename__ = "idempotency_keys"

    business_id: Mapped[int] = mapped_column(ForeignKey("businesses.id"), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))  # sha256 hex of endpoint and body
    job_id: Mapped[str | None] = mapped_column(String(36), index=True)  # chat uuid or idle id
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
class JobReturn(Base):
    """One delivery of a leased job that ended without a result: the miner gave it back
    (`released`, with its reason) or let its lease run out (`lapsed`). Every one is kept, not
    only the last (app/leases/rules.py): each returner waits RETURNED_JOB_COOLDOWN_S before it
    may lease the job again, and none of them gets its last delivery. The miner's reason is
    for operators only (GET /job/{id}/returns); businesses see a fixed failure_reason."""

    __tablename__ = "job_returns"
    __table_args__ = (Index("ix_job_returns_job_miner", "job_table", "job_id", "miner_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_table: Mapped[str] = mapped_column(String(32))  # chat_jobs | idle_jobs
    job_id: Mapped[str] = mapped_column(String(36))  # the job's id as text
    miner_id: Mapped[int] = mapped_column(Integer)
    returned_at: Mapped[datetime] = mapped_column(UTCDateTime)
    how: Mapped[str] = mapped_column(String(16))  # released | lapsed
    reason: Mapped[str | None] = mapped_column(String(500))  # the miner's words, operators only


class IdleJob(Base):
    """Inference sold to outside clients, run by a miner (lease, like chat) or on RunPod.

    Status, stored: queued -> assigned (leased to a miner) -> completed | failed, or
    queued -> processing (claimed by the worker for RunPod) -> completed | failed.
    The seed's names map as: "pending" = queued; "processing" = assigned or processing.
    Miners can only lease a queued job (app/leases/rules.py), so a job the worker has claimed is
    never also given to a miner, and vice versa.

    usd_earned is computed by the server (output tokens x PRICE_PER_1K_TOKENS_USD) and written
    in the same transaction as the job's one RevenueEvent; a client-supplied value is ignored.
    """

    __tablename__ = "idle_jobs"
    __table_args__ = (
        Index("ix_idle_jobs_status_lease", "status", "lease_expires_at"),
        Index("ix_idle_jobs_status_created", "status", "created_at"),
        # /network, /metrics and token drift count jobs completed since a moment
        Index("ix_idle_jobs_status_completed", "status", "completed_at"),
        # MINER_MAX_LEASES counts a wallet's leases on every lease request
        Index("ix_idle_jobs_assigned_miner", "miner_id", postgresql_where=text("status = 'assigned'"),
              sqlite_where=text("status = 'assigned'")),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    prompt: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.queued)
    submitted_by: Mapped[str | None] = mapped_column(String(64))  # the API key's prefix, never the key
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # the billed count: the server's count of the output (app/tokens.py), capped at max_tokens
    output_tokens: Mapped[int | None] = mapped_column(Integer)
    reported_tokens: Mapped[int | None] = mapped_column(Integer)  # the miner's count, never billed
    usd_earned: Mapped[Decimal | None] = mapped_column(USD)
    result: Mapped[str | None] = mapped_column(Text)
    runpod_job_id: Mapped[str | None] = mapped_column(String(100))
    # The seed's error_message column, under the name app/leases/rules.py writes.
    failure_reason: Mapped[str | None] = mapped_column("error_message", String(1000))
    error_message = synonym("failure_reason")

    max_tokens: Mapped[int] = mapped_column(Integer, default=256)
    business_id: Mapped[int | None] = mapped_column(ForeignKey("businesses.id"), index=True)
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"))
    # leases (app/leases/rules.py); for RunPod, lease_id/lease_expires_at hold the worker's claim
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # miner deliveries so far
    lease_id: Mapped[str | None] = mapped_column(String(36))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    miner_id: Mapped[int | None] = mapped_column(ForeignKey("miners.id"))
    # who last let this job's lease run out or gave it back, and when: that miner may not lease
    # it again for RETURNED_JOB_COOLDOWN_S (app/leases/rules.py), so one wallet cannot spend
    # every delivery of a job by taking it back again and again
    returned_by: Mapped[int | None] = mapped_column(Integer)
    returned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    assigned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    signature: Mapped[str | None] = mapped_column(Text)  # miner's wallet signature, 0x-hex
    processed_by: Mapped[str | None] = mapped_column(String(16))  # miner | runpod
    input_tokens: Mapped[int | None] = mapped_column(Integer)
    runpod_attempts: Mapped[int] = mapped_column(Integer, default=0)  # worker runs so far
    runpod_submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    runpod_execution_ms: Mapped[int | None] = mapped_column(Integer)
    runpod_cost_usd: Mapped[Decimal | None] = mapped_column(USD)  # what RunPod charges us
    hold_usd: Mapped[Decimal | None] = mapped_column(USD)  # as on ChatJob: the ledger's hold
    erased_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # prompt and result erased


class RevenueEvent(Base):
    """The revenue ledger: one row per completed idle job, written in the completing transaction.

    buyback_id is set by the treasury when a buyback claims the event (each USD at most once).
    A carry-over event (source "carryover", no idle job) gives back the revenue a partly done
    buyback did not spend: carried_from_buyback_id names it, at most one per buyback. It is not
    new revenue, so revenue totals leave it out.
    """

    __tablename__ = "revenue_events"
    __table_args__ = (Index("uq_revenue_events_ledger_entry", "ledger_entry_id", unique=True),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    idle_job_id: Mapped[int | None] = mapped_column(ForeignKey("idle_jobs.id"), unique=True)
    amount_usd: Mapped[Decimal] = mapped_column(USD)
    source: Mapped[str] = mapped_column(String(16))  # miner | runpod
    output_tokens: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    buyback_id: Mapped[int | None] = mapped_column(Integer, index=True)
    carried_from_buyback_id: Mapped[int | None] = mapped_column(Integer, unique=True)
    # the ledger's charge this revenue is (app/accounts/ledger.py writes both in one
    # transaction): revenue is what businesses were charged, one source of truth. NULL for
    # carry-overs and for revenue booked before the ledger existed (migration 0016).
    ledger_entry_id: Mapped[int | None] = mapped_column(Integer)


CARRYOVER_SOURCE = "carryover"


class SystemMetrics(Base):
    __tablename__ = "system_metrics"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    metric_name: Mapped[str] = mapped_column(String(100), unique=True)
    value: Mapped[Decimal] = mapped_column(USD, default=Decimal(0))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class TokenAmount(TypeDecorator[int]):
    """Integer token base units (wei-like), stored as exact decimal digits: 18-decimal amounts
    overflow BIGINT and SQLite's NUMERIC is a float. Sum these in Python, never in SQL."""

    impl = String(80)
    cache_ok = True

    def process_bind_param(self, value, dialect):  # type: ignore[no-untyped-def]
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"token amounts are int base units, got {type(value).__name__}")
        return str(value)

    def process_result_value(self, value, dialect):  # type: ignore[no-untyped-def]
        return None if value is None else int(value)


class BuybackStatus(enum.StrEnum):
    planned = "planned"
    swapping = "swapping"
    swapped = "swapped"
    burning = "burning"
    burned = "burned"
    failed = "failed"
    cancelled = "cancelled"  # by an operator, once no transaction of it could still be mined


ACTIVE_BUYBACK_STATUSES = frozenset({BuybackStatus.planned, BuybackStatus.swapping,
                                     BuybackStatus.swapped, BuybackStatus.burning})


class Buyback(Base):
    """Revenue turned into burned $SERV. planned -> swapping -> swapped -> burning -> burned,
    or failed (failure_reason says why).

    active_slot is 1 while the buyback is active and NULL once it is burned or failed; its
    UNIQUE constraint (NULLs are distinct on SQLite and PostgreSQL) lets the database, not a
    lock, guarantee at most one active buyback. Token amounts are integer base units.
    """

    __tablename__ = "buybacks"
    __table_args__ = (UniqueConstraint("active_slot", name="uq_buybacks_active_slot"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default=BuybackStatus.planned)
    active_slot: Mapped[int | None] = mapped_column(Integer)
    usd_amount: Mapped[Decimal] = mapped_column(USD)  # usd_claimed: the RevenueEvents it claimed
    # stablecoin the mined swaps took from the treasury, in USD (rounded up to the micro-dollar);
    # set when the swaps end; usd_amount - usd_swapped went back to unallocated (carry-over)
    usd_swapped: Mapped[Decimal | None] = mapped_column(USD)
    quote_amount_in: Mapped[int | None] = mapped_column(TokenAmount)  # stablecoin to swap
    amount_out_min_total: Mapped[int | None] = mapped_column(TokenAmount)  # over mined swaps
    serv_received: Mapped[int | None] = mapped_column(TokenAmount)  # from the swaps' logs
    serv_burned: Mapped[int | None] = mapped_column(TokenAmount)  # from the burn's logs
    quote_unspent: Mapped[int | None] = mapped_column(TokenAmount)  # left when swaps stopped early
    triggered_by: Mapped[str] = mapped_column(String(42))  # "auto" or the operator's address
    failure_reason: Mapped[str | None] = mapped_column(String(1000))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class BuybackTx(Base):
    """One signed transaction of a buyback, stored (hash, nonce, raw bytes) BEFORE broadcast.

    kind: approve | swap | burn. status: prepared -> mined | reverted, or superseded (another
    transaction with the same nonce, e.g. a fee-bumped replacement, was mined instead).
    """

    __tablename__ = "buyback_txs"
    __table_args__ = (UniqueConstraint("tx_hash", name="uq_buyback_txs_tx_hash"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    buyback_id: Mapped[int] = mapped_column(ForeignKey("buybacks.id", name="fk_buyback_txs_buyback_id"),
                                            index=True)
    kind: Mapped[str] = mapped_column(String(16))
    seq: Mapped[int] = mapped_column(Integer)  # order within the buyback
    tx_hash: Mapped[str] = mapped_column(String(66))
    nonce: Mapped[int] = mapped_column(BigInteger)
    raw_tx: Mapped[str] = mapped_column(Text)  # 0x-hex of the signed bytes, to re-broadcast
    status: Mapped[str] = mapped_column(String(16), default="prepared")
    amount_in: Mapped[int | None] = mapped_column(TokenAmount)  # swap: stablecoin in; burn: $SERV
    amount_out_min: Mapped[int | None] = mapped_column(TokenAmount)  # swap only
    amount_out: Mapped[int | None] = mapped_column(TokenAmount)  # swap: $SERV received; burn: burned
    block_number: Mapped[int | None] = mapped_column(BigInteger)
    # the block's hash when recorded: a reorg that re-mines it at the same height is seen too
    block_hash: Mapped[str | None] = mapped_column(String(66))
    gas_used: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    mined_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class BuybackEvent(Base):
    """What happened to a buyback and why, for operators: pauses (price deviation, operator),
    reorgs, cancels, carry-overs. Append-only."""

    __tablename__ = "buyback_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    buyback_id: Mapped[int] = mapped_column(
        ForeignKey("buybacks.id", name="fk_buyback_events_buyback_id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(String(1000))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class TreasuryControl(Base):
    """Operator switches of the treasury: one row (id 1). paused stops new buybacks and the
    next step of the active one."""

    __tablename__ = "treasury_controls"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    reason: Mapped[str | None] = mapped_column(String(200))
    changed_by: Mapped[str | None] = mapped_column(String(42))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PriceObservation(Base):
    """A Uniswap V2 pair's cumulative prices (UQ112x112 sums, integers) at a block timestamp
    (seconds): two of them a window apart give the time-weighted average price over it."""

    __tablename__ = "price_observations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pair: Mapped[str] = mapped_column(String(42), index=True)
    block_number: Mapped[int] = mapped_column(BigInteger)
    timestamp: Mapped[int] = mapped_column(BigInteger)
    price0_cumulative: Mapped[int] = mapped_column(TokenAmount)
    price1_cumulative: Mapped[int] = mapped_column(TokenAmount)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class TrustCheck(Base):
    """One check of a wallet's work (app/trust): kind verify | canary | feedback | rescore,
    passed or not, the job it judged, its weight in the reputation, and the credit forfeited."""

    __tablename__ = "trust_checks"
    __table_args__ = (Index("ix_trust_checks_miner_kind", "miner_id", "kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    miner_id: Mapped[int] = mapped_column(ForeignKey("miners.id"))
    kind: Mapped[str] = mapped_column(String(16))
    passed: Mapped[bool] = mapped_column(Boolean)
    job_id: Mapped[str | None] = mapped_column(String(36))
    weight: Mapped[float] = mapped_column(Float, default=1.0)
    similarity: Mapped[float | None] = mapped_column(Float)
    tokens_forfeited: Mapped[int] = mapped_column(Integer, default=0)
    detail: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class Canary(Base):
    """An operator's prompt with its reference answer (from a trusted run of `model`), mixed into
    the queue as an ordinary-looking chat job (app/trust/canaries.py). history: JSON list of
    {role, content}, earlier turns shown to the miner."""

    __tablename__ = "canaries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model: Mapped[str | None] = mapped_column(String(128))
    prompt: Mapped[str] = mapped_column(Text)
    context: Mapped[str | None] = mapped_column(Text)
    history: Mapped[str | None] = mapped_column(Text)
    reference: Mapped[str] = mapped_column(Text)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Feedback(Base):
    """A business's rating of one of its own answers: one per job."""

    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("chat_jobs.id"), unique=True)
    business_id: Mapped[int | None] = mapped_column(ForeignKey("businesses.id"))
    miner_id: Mapped[int | None] = mapped_column(ForeignKey("miners.id"))
    rating: Mapped[str] = mapped_column(String(8))  # up | down
    comment: Mapped[str | None] = mapped_column(String(2000))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LedgerKind(enum.StrEnum):
    topup = "topup"  # money in: an operator's credit (reference: invoice/payment id) or a deposit
    hold = "hold"  # a submitted job's most expensive outcome, reserved (negative)
    charge = "charge"  # what a completed job cost, by the server's count (negative)
    release = "release"  # a hold given back, in full when the job is charged or fails (positive)
    refund = "refund"  # money an operator gives back for a charge (positive)
    adjustment = "adjustment"  # an operator's correction, either sign; also a deposit reversed


JOB_ENTRY_KINDS = (LedgerKind.hold, LedgerKind.charge, LedgerKind.release)


class LedgerEntry(Base):
    """One change of a business's balance. Append-only: never updated, never deleted; the
    balance is SUM(amount_usd) over a business's entries (Business.balance_usd keeps it).

    A job has at most one hold, one charge and one release (a unique index): completing or
    failing it twice cannot move money twice. Top-ups are unique per business and reference,
    so a credit repeated with the same invoice id credits once.
    """

    __tablename__ = "ledger_entries"
    __table_args__ = (
        Index("ix_ledger_entries_business_id", "business_id", "id"),
        Index("ix_ledger_entries_key_created", "api_key_id", "created_at"),
        Index("uq_ledger_entries_job", "job_kind", "job_id", "kind", unique=True,
              postgresql_where=text("job_id IS NOT NULL"), sqlite_where=text("job_id IS NOT NULL")),
        Index("uq_ledger_entries_reference", "business_id", "kind", "reference", unique=True,
              postgresql_where=text("reference IS NOT NULL"),
              sqlite_where=text("reference IS NOT NULL")),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    business_id: Mapped[int] = mapped_column(ForeignKey("businesses.id"))
    kind: Mapped[str] = mapped_column(String(16))
    amount_usd: Mapped[Decimal] = mapped_column(USD)  # signed: what it adds to the balance
    job_kind: Mapped[str | None] = mapped_column(String(8))  # chat | idle
    job_id: Mapped[str | None] = mapped_column(String(36))
    api_key_id: Mapped[int | None] = mapped_column(Integer)
    model: Mapped[str | None] = mapped_column(String(128))
    tokens: Mapped[int | None] = mapped_column(Integer)  # hold: max_tokens; charge: counted
    price_per_1k_usd: Mapped[Decimal | None] = mapped_column(USD)  # the price held at
    reference: Mapped[str | None] = mapped_column(String(255))  # top-ups, refunds, adjustments
    actor: Mapped[str | None] = mapped_column(String(64))  # operator address, "system", "chain"
    note: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Deposit(Base):
    """A stablecoin Transfer into the treasury seen on chain (app/accounts/deposits.py).

    status: seen (not yet CONFIRMATIONS deep) -> credited (a top-up entry, ledger_entry_id) |
    dropped (its transaction left the chain before it was credited: never credited) |
    unattributed (deep, but it names no business: an operator's to resolve); a credited deposit
    whose transaction later disappears is reversed once (an adjustment entry, status reversed).
    Amounts: `amount` in the token's base units (int), `amount_usd` what was credited."""

    __tablename__ = "deposits"
    __table_args__ = (UniqueConstraint("tx_hash", "log_index", name="uq_deposits_tx_log"),
                      Index("ix_deposits_status", "status"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    business_id: Mapped[int | None] = mapped_column(ForeignKey("businesses.id"), index=True)
    tx_hash: Mapped[str] = mapped_column(String(66))
    log_index: Mapped[int] = mapped_column(Integer)
    block_number: Mapped[int] = mapped_column(BigInteger)
    block_hash: Mapped[str] = mapped_column(String(66))
    from_address: Mapped[str] = mapped_column(String(42))
    token_address: Mapped[str] = mapped_column(String(42))
    amount: Mapped[int] = mapped_column(TokenAmount)
    amount_usd: Mapped[Decimal] = mapped_column(USD)
    reference: Mapped[str | None] = mapped_column(String(32))  # the deposit reference it carried
    status: Mapped[str] = mapped_column(String(16), default="seen")
    ledger_entry_id: Mapped[int | None] = mapped_column(Integer)
    reversal_entry_id: Mapped[int | None] = mapped_column(Integer)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    credited_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ChainCursor(Base):
    """How far a chain watcher has scanned: the last block it has seen to depth (by name)."""

    __tablename__ = "chain_cursors"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    block_number: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Erasure(Base):
    """A record that customer content was erased: who asked, what, when, how much. Never the
    content, and the session id only as a SHA-256 (a business may name sessions after people)."""

    __tablename__ = "erasures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    business_id: Mapped[int | None] = mapped_column(ForeignKey("businesses.id"), index=True)
    scope: Mapped[str] = mapped_column(String(16))  # session | retention | business
    subject_hash: Mapped[str | None] = mapped_column(String(64))  # sha256 of the session id
    actor: Mapped[str] = mapped_column(String(100))  # "key:<prefix>", operator address, "worker"
    jobs: Mapped[int] = mapped_column(Integer, default=0)  # chat jobs whose content was erased
    messages: Mapped[int] = mapped_column(Integer, default=0)  # chat_logs rows deleted
    cancelled: Mapped[int] = mapped_column(Integer, default=0)  # in-flight jobs cancelled
    before: Mapped[datetime | None] = mapped_column(UTCDateTime)  # retention: content older than
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
