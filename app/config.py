"""The one place that reads the environment. Everything else receives a Settings object."""

from __future__ import annotations

import ipaddress
import os
from decimal import Decimal
from functools import cached_property
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.tokens import TokenizerName


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    # --- seed variables -------------------------------------------------------------------------
    database_url: str = "sqlite+aiosqlite:///./mia.db"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "mia"  # every Redis key starts with this; lets deployments share a Redis
    redis_command_timeout_s: float = 5.0  # a hung Redis turns into 503s after this, not hangs
    redis_cluster: bool = False  # REDIS_URL is one node of a Redis Cluster (app/redis_client.py)
    port: int = 8000
    runpod_api_key: SecretStr | None = None
    runpod_endpoint_id: str | None = None
    buyback_threshold_usd: Decimal = Decimal("100")
    token_symbol: str = "SERV"
    burn_address: str = "0x000000000000000000000000000000000000dEaD"

    # --- HTTP ---------------------------------------------------------------------------------
    env: Literal["development", "production"] = "development"  # production: `mia serve` and
    # `mia worker` refuse dev settings (production_problems below)
    host: str = "127.0.0.1"
    public_url: str = ""  # e.g. https://api.example.com; defaults to http://{host}:{port}
    max_body_bytes: int = 256 * 1024
    cors_origins: Annotated[list[str], NoDecode] = []  # "*" for any origin (never with credentials)
    cors_allow_credentials: bool = False  # auth is a Bearer header, so browsers need no cookies
    log_level: str = "INFO"
    metrics_token: SecretStr | None = None  # set: /metrics wants Authorization: Bearer <it>

    # --- observability (app/observability/, README "Operating MIA") --------------------------
    log_format: Literal["text", "json"] = "text"  # json: one object a line, with request ids
    metrics_enabled: bool = True  # false: no histograms, no request middleware (bench baseline)
    metrics_cache_s: float = 10.0  # /metrics' database figures: computed at most this often
    # per process (a full-table GROUP BY at 1M jobs costs ~200 ms)
    rate_limit_metrics_per_min: int = 120  # per client IP (a scraper every 15 s needs 4)
    # Shared by `mia serve --workers N` and `mia worker` on one host so /metrics adds them up;
    # unset, `mia serve`/`mia worker` make a private one (prometheus_client's multiprocess mode)
    prometheus_multiproc_dir: str | None = None
    otel_exporter_otlp_endpoint: str | None = None  # set: OpenTelemetry traces, OTLP over HTTP

    # --- the server (`mia serve`) and timeouts (seconds) -------------------------------------
    # Which HTTP server `mia serve` runs: uvicorn (the default and the tested one) or granian
    # (measured in issue 20, bench/README.md; needs `pip install granian`). Not a documented knob.
    server_impl: Literal["uvicorn", "granian"] = "uvicorn"
    server_turn_writes: bool = True  # uvicorn: what a response writes in one loop turn, sent once
    server_keepalive_s: int = 75  # idle keep-alive; above a load balancer's 60 s idle timeout
    server_graceful_shutdown_s: int = 35  # in-flight requests (a 30 s long-poll) may finish
    server_max_connections: int = 10_000  # per process, then 503; 0: no cap. Each long-poll
    # holds one Redis connection, and the Redis pool stops at 10000 (app/context.py)
    # Proxies trusted to append to X-Forwarded-For: addresses and CIDR ranges, never "*". The
    # client IP (what per-IP limits count) is the right-most entry that is not one of them.
    forwarded_allow_ips: Annotated[list[str], NoDecode] = ["127.0.0.1"]
    db_command_timeout_s: float = 10.0  # one SQL statement (PostgreSQL), then 503
    db_pool_timeout_s: float = 10.0  # waiting for a pooled connection (PostgreSQL), then 503
    db_pool_size: int = 10  # PostgreSQL connections per process, and up to twice as many more
    # under load: keep processes x 3 x this below the server's max_connections

    # --- rate limits: token buckets in Redis (app/ratelimit.py); a 0 disables that limit ------
    # Generous on purpose: a miner at 50 jobs/s makes ~100 requests/s (a long-poll counts once).
    rate_limit_key_per_s: int = 100  # per business API key: chat and idle-job requests
    rate_limit_key_burst: int = 500
    rate_limit_address_per_s: int = 200  # per wallet signed in with a session token
    rate_limit_address_burst: int = 400
    rate_limit_signin_per_min: int = 60  # per client IP: /auth/nonce, /register_miner,
    # /auth/login together (a sign-in is two requests); a full minute's worth may come at once
    rate_limit_chain_reads_per_min: int = 60  # per client IP: /burns/summary, /burns/{id}/verify
    rate_limit_health_per_min: int = 600  # per client IP: / and /health (a prober every second
    # uses 60); 0: no limit
    rate_limit_auth_fail_per_min: int = 30  # per client IP: unknown or revoked keys and tokens;
    # past it 429, answered from memory without a database read
    rate_limit_block_ms: int = 100  # a process takes this many ms' worth of a per-key or
    # per-wallet rate from Redis at once and spends it locally (app/ratelimit.py says the
    # bound: a few tokens early per process); 0: one Redis call per request

    # --- chat and the job queue (seconds unless named otherwise) -------------------------------
    chat_allow_anonymous: bool = False
    chat_anon_rate_per_min: int = 20
    chat_history_limit: int = 20
    chat_max_wait_s: int = 60
    # PostgreSQL: concurrent submissions of one API process are written by one statement of at
    # most this many rows (app/chat/group.py); 1 writes each on its own. A lone submission never
    # waits; with the window > 0, a group formed under load also waits this long for more.
    # Off by default: on a loaded 2-core host, bench.cycle --batch 16 measured 9.3-10.3 ms of
    # API CPU per job with groups of 64 against 7.5-9.0 without (issue 20's report); measure on
    # a quiet host before turning it on.
    chat_submit_group_max: int = 1
    chat_submit_group_window_ms: float = 0.0
    lease_seconds: int = 60
    lease_max_extend_s: int = 600
    lease_max_total_s: int = 900  # one delivery's whole lease, from assignment, extensions
    # included; an extension past it is refused (409 lease_limit) and the lease runs out
    miner_max_leases: int = 32  # leases one wallet holds at once, chat and idle together (429)
    miner_max_polls: int = 64  # long-polls (wait > 0) one wallet keeps open at once (429)
    max_attempts: int = 3
    returned_job_cooldown_s: int = 10  # a miner whose lease on a job ran out, or who gave it
    # back, cannot lease that job again for this long: others get the next delivery (an idle
    # miner takes it within milliseconds; a network of one miner waits this long)
    miner_max_wait_s: int = 30
    idempotency_key_ttl_s: int = 24 * 3600  # an Idempotency-Key is remembered this long
    # --- the OpenAI-compatible API (/v1) --------------------------------------------------------
    openai_max_wait_s: int = 600  # a /v1 request waits this long for its answer (the openai
    # SDK's own default timeout); then 504 (or an error event when streaming) naming the job
    model_ttl_s: int = 180  # a model is served while a miner declaring it polled this recently
    miner_max_models: int = 4  # models one wallet may declare within MODEL_TTL_S (0: no cap)
    openai_max_input_chars: int = 64_000  # the most text (every message) one /v1 request sends
    stream_buffer_ttl_s: int = 600  # a lease's streamed chunks stay in Redis this long past the
    # lease's hard end (assignment + LEASE_MAX_TOTAL_S); chunks never push the expiry further
    stream_max_bytes: int = 131_072  # a lease's streamed chunks in all (UTF-8 bytes); a job that
    # names max_tokens gets max_tokens * STREAM_BYTES_PER_TOKEN if that is less (409 stream_budget)
    stream_bytes_per_token: int = 16
    stream_max_chunks: int = 2048  # chunks per lease; with max_tokens, at most max_tokens + 16
    reaper_interval_s: float = 1.0
    reconcile_interval_s: float = 10.0
    reconcile_grace_s: float = 5.0
    run_maintenance_in_api: bool = True  # lease reaper + reconciler loops inside the API process
    gc_freeze: bool = True  # freeze start-up objects out of GC, fewer young collections (gcsettle)

    # --- sign-in (EIP-4361) ------------------------------------------------------------------------
    siwe_domain: str = ""  # defaults to the host:port of public_url
    chain_id: int = 31337
    siwe_nonce_ttl_s: int = 300
    siwe_message_ttl_s: int = 600
    siwe_clock_skew_s: int = 60
    siwe_max_age_s: int = 600  # a sign-in message issued longer ago is refused, expiry or not
    token_ttl_s: int = 24 * 3600
    auth_cache_ttl_s: float = 5.0  # a process remembers a valid key/token this long (0: never);
    # revocations clear every process at once over Redis, this bounds a lost message
    operator_addresses: Annotated[list[str], NoDecode] = []

    # --- idle jobs, RunPod and the worker (seconds unless named otherwise) -------------------------
    # what clients pay per 1000 output tokens of an idle job (IDLE_PRICE_PER_1K_TOKENS_USD; the
    # seed's PRICE_PER_1K_TOKENS_USD still works)
    price_per_1k_tokens_usd: Decimal = Field(
        default=Decimal("0.002"),
        validation_alias=AliasChoices("IDLE_PRICE_PER_1K_TOKENS_USD", "PRICE_PER_1K_TOKENS_USD",
                                      "price_per_1k_tokens_usd"))
    # how the server counts output tokens (billing, miner credit): the served model's tokenizer
    # (app/tokens.py); a miner's own count is stored for comparison, never billed
    tokenizer: TokenizerName = "mistral-v1"
    idle_to_runpod_after_s: float = 30.0  # a queued idle job no miner took goes to RunPod after this
    runpod_base_url: str = "https://api.runpod.ai"
    runpod_timeout_s: float = 300.0  # whole RunPod run; the job is cancelled at RunPod after it
    runpod_request_timeout_s: float = 10.0  # one HTTP request to RunPod
    runpod_cost_per_second_usd: Decimal = Decimal("0.00044")  # our cost of RunPod execution time
    runpod_max_tries: int = 3  # worker runs per job before it fails with the last reason
    runpod_retry_base_s: float = 2.0  # backoff after a transient error: base * 2**(try-1)
    runpod_hold_s: float = 30.0  # a worker's claim on a job, renewed while it waits on RunPod
    worker_max_jobs: int = 50  # concurrent arq jobs per worker process
    # while Redis is down the worker polls again after 0.5 s, doubling up to this many seconds
    worker_redis_backoff_max_s: float = 30.0

    # --- business accounts: prices, holds, retention, deposits (app/accounts) ---------------------
    # what a business pays per 1000 output tokens of a chat job; 0 (the default): chat is free,
    # nothing is held or charged and anonymous chat works as before
    chat_price_per_1k_tokens_usd: Decimal = Decimal(0)
    chat_hold_max_tokens: int = 1024  # a priced chat without max_tokens holds (and may be charged)
    # for at most this many output tokens; the answer is counted, and charged, up to it
    chat_retention_days: int = 0  # conversation content older than this is erased; 0: kept
    retention_interval_s: float = 3600.0  # how often the worker erases expired content
    deposit_scan_interval_s: float = 15.0  # how often the worker reads new stablecoin deposits
    deposit_start_block: int | None = None  # where the first scan starts (None: the chain head)
    deposit_max_blocks: int = 2000  # blocks per eth_getLogs request

    # --- chain (ERC-1271 contract wallets and the treasury's buybacks) -----------------------------
    chain_rpc_url: str | None = None
    erc1271_gas_limit: int = 200_000  # gas for one contract wallet's isValidSignature call
    erc1271_checks_per_min: int = 600  # per contract wallet: result signatures put to its contract

    # --- treasury: buybacks of $SERV with revenue, and burns (app/treasury) -----------------------
    treasury_private_key: SecretStr | None = None  # or a keystore; never logged or returned
    treasury_keystore: str | None = None  # path of an encrypted JSON keystore
    treasury_keystore_password: SecretStr | None = None
    treasury_address: str | None = None  # read-only nodes (public /burns) without the key
    serv_token_address: str | None = None
    quote_token_address: str | None = None  # the USD stablecoin revenue is swapped from
    dex_router_address: str | None = None  # Uniswap V2-compatible router
    max_slippage_bps: int = 100  # amountOutMin = quote x (1 - this / 10000)
    max_price_impact_bps: int = 200  # larger buybacks are split into chunks under this
    confirmations: int = 12  # blocks (its own included) before a tx counts; `mia dev` uses 1
    max_fee_gwei: Decimal = Decimal("200")  # cap of maxFeePerGas; nothing is sent above it
    tx_timeout_s: float = 120.0  # per attempt, before a same-nonce fee-bumped replacement
    swap_deadline_s: int = 300  # the router's deadline, from the chain head
    explorer_tx_url: str = ""  # e.g. https://etherscan.io/tx/{tx_hash}; empty: no links
    buyback_check_interval_s: int = 60  # how often the worker compares revenue to the threshold
    buyback_chunk_interval_s: float = 60.0  # seconds between a chunked buyback's swaps, so that
    # arbitrage can restore the pool price; the worker is not held meanwhile (0: back to back)
    buyback_chunk_interval_max_s: float | None = None  # each wait is drawn from
    # [BUYBACK_CHUNK_INTERVAL_S, this] so the next chunk's time cannot be predicted (None: fixed)
    buyback_check_jitter_s: float = 0.0  # each threshold check waits interval + [0, this) s
    twap_window_s: int = 600  # TWAP over the pair's cumulative prices; 0 disables (tests only)
    max_twap_deviation_bps: int = 200  # spot farther than this from the TWAP: the chunk waits
    buyback_pause_recheck_s: float = 60.0  # how soon a paused buyback (deviation, operator) looks again
    private_tx_rpc_url: str | None = None  # signed swaps/burns go only here (reads: CHAIN_RPC_URL)

    # --- trust: verification, canaries, reputation, probation (app/trust) ---------------------
    verify_sample_rate: float = 0.05  # share of answered chat jobs re-run by another wallet
    canary_rate: float = 0.01  # canary jobs mixed in per answered chat job (if canaries exist)
    probation_jobs: int = 10  # checks a new wallet passes on shadow work before it serves a
    # business (0: no probation); TRUSTED_MINERS skip it
    trusted_miners: Annotated[list[str], NoDecode] = []  # wallet addresses, comma-separated
    reputation_suspend_below: float = 0.3  # a wallet whose score falls below this is suspended
    reputation_decay: float = 0.02  # each new check of a wallet shrinks its older evidence by this
    reputation_fail_weight: float = 20.0  # a failed work check (verify, canary, rescore) weighs
    # this many passes: a just-graduated wallet survives one, a sleeper is suspended within ~6
    feedback_weight: float = 0.1  # a business's rating, against a check's 1.0
    verify_prefix_tokens: int = 32  # answers agree if their first N tokens are equal, or
    verify_min_similarity: float = 0.8  # ... if their token sequences are this similar (0-1)
    lease_priority_delay_s: float = 0.2  # a wallet scoring below 0.5 starts each long-poll up
    # to this much later, so better-scored wallets waiting at the same moment lease first
    # re-scoring (app/trust/rescore.py): answers sampled at temperature > 0 cannot be re-run, so
    # a sampled share of them (VERIFY_SAMPLE_RATE) is scored in one prefill by an
    # OpenAI-compatible server the operator runs (vLLM: /v1/completions, echo + logprobs)
    rescore_url: str | None = None  # e.g. http://127.0.0.1:8000/v1; unset: no re-scoring
    rescore_model: str | None = None  # the model it serves: only answers claimed to come from
    # this model are re-scored (unset: ask the server for the answer's own model by name)
    rescore_api_key: SecretStr | None = None  # sent as Authorization: Bearer, if one is wanted
    rescore_timeout_s: float = 10.0  # one re-score's whole time; past it the check is skipped
    rescore_concurrency: int = 4  # re-scores in flight per process; more are skipped, not queued
    rescore_top_k: int = 5  # the `logprobs` asked for: a token outside the model's top k is odd
    rescore_min_mean_logprob: float = -2.5  # an answer whose tokens average less fails
    rescore_max_outside_top_k: float = 0.35  # ... or with more than this share outside the top k
    rescore_min_end_logprob: float = -7.0  # ... or where the model would not have stopped
    # (a cut answer); not judged for answers that stopped at max_tokens

    @field_validator("verify_sample_rate", "canary_rate", "reputation_suspend_below",
                     "reputation_decay", "verify_min_similarity",
                     "rescore_max_outside_top_k")
    @classmethod
    def _fraction(cls, value: float) -> float:
        if not 0 <= value <= 1:
            raise ValueError("must be between 0 and 1")
        return value

    @field_validator("rescore_timeout_s", "rescore_concurrency", "rescore_top_k")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be positive")
        return value

    @field_validator("reputation_fail_weight")
    @classmethod
    def _at_least_one(cls, value: float) -> float:
        if value < 1:
            raise ValueError("must be at least 1 (a failure weighs at least a pass)")
        return value

    @model_validator(mode="after")
    def _chunk_interval_range(self) -> Settings:
        top = self.buyback_chunk_interval_max_s
        if top is not None and top < self.buyback_chunk_interval_s:
            raise ValueError("BUYBACK_CHUNK_INTERVAL_MAX_S must be >= BUYBACK_CHUNK_INTERVAL_S")
        if not 0 < self.max_twap_deviation_bps < 10_000:
            raise ValueError("MAX_TWAP_DEVIATION_BPS must be in (0, 10000)")
        return self

    @field_validator("cors_origins", "operator_addresses", "forwarded_allow_ips", "trusted_miners",
                     mode="before")
    @classmethod
    def _split_csv(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        # An origin never ends in "/", but a pasted URL often does; "*" makes the rest moot.
        origins = [o.rstrip("/") for o in value]
        return ["*"] if "*" in origins else origins

    @model_validator(mode="after")
    def _cors_credentials(self) -> Settings:
        if self.cors_allow_credentials and "*" in self.cors_origins:
            # Starlette would echo ANY origin with credentials allowed: every site could call
            # the API with the user's cookies. Name the origins instead.
            raise ValueError("CORS_ORIGINS=* cannot be combined with CORS_ALLOW_CREDENTIALS=true;"
                             " list the allowed origins")
        return self

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _trusted_proxies(cls, value: list[str]) -> list[str]:
        if "*" in value:
            # Trusting every peer makes X-Forwarded-For's left-most entry, which the caller
            # writes, the client IP: every per-IP limit and the nonce store become unbounded.
            raise ValueError("'*' would let any caller pick its own client IP with "
                             "X-Forwarded-For; list your proxies' addresses or CIDR ranges "
                             "(e.g. 10.0.0.0/8)")
        trusted = []
        for entry in value:
            try:
                trusted.append(str(ipaddress.ip_network(entry, strict=False)) if "/" in entry
                               else str(ipaddress.ip_address(entry)))
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or a CIDR range") from None
        return trusted

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        # Platforms (Railway, Heroku) hand out postgres:// URLs; we speak asyncpg.
        for prefix in ("postgres://", "postgresql://"):
            if value.startswith(prefix):
                return "postgresql+asyncpg://" + value[len(prefix):]
        if value.startswith("sqlite:///"):
            return "sqlite+aiosqlite:///" + value[len("sqlite:///"):]
        return value

    @cached_property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @cached_property
    def siwe_expected_domain(self) -> str:
        if self.siwe_domain:
            return self.siwe_domain
        return self.base_url.split("://", 1)[1].split("/", 1)[0]

    @cached_property
    def runpod_configured(self) -> bool:
        return self.runpod_api_key is not None and bool(self.runpod_endpoint_id)

    @cached_property
    def trusted(self) -> frozenset[str]:
        return frozenset(a.lower() for a in self.trusted_miners)

    @cached_property
    def operators(self) -> frozenset[str]:
        return frozenset(a.lower() for a in self.operator_addresses)

    def production_problems(self) -> list[str]:
        """Why these settings must not run a public deployment, one line each (empty: fine).
        FORWARDED_ALLOW_IPS=* never gets this far: it is refused whatever ENV says."""
        problems = []
        if not self.public_url:
            problems.append(f"PUBLIC_URL is not set: miners would sign in to {self.base_url}")
        if self.chain_id in DEV_CHAIN_IDS:
            problems.append(f"CHAIN_ID={self.chain_id} is a development chain; set the chain "
                            "your treasury and contract wallets live on")
        return problems


DEV_CHAIN_IDS = frozenset({31337, 1337})  # Hardhat/Anvil and Ganache/geth --dev


def export_multiproc_dir(path: str) -> None:
    """prometheus_client's multiprocess mode reads PROMETHEUS_MULTIPROC_DIR from the environment
    of every process (the server's workers inherit it): set before any metric exists."""
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path


def load_settings(**overrides: object) -> Settings:
    return Settings(**overrides)  # type: ignore[arg-type]

