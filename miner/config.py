"""Miner configuration from command-line flags and environment variables (flags win)."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from typing import Mapping, Sequence

DEFAULT_BACKEND_URL = "http://127.0.0.1:8000"
DEFAULT_MODEL_URL = "http://127.0.0.1:8001/v1"


class ConfigError(ValueError):
    """A configuration problem, worded for the operator."""


def _secret_field() -> str | None:
    return field(default=None, repr=False)  # type: ignore[return-value]


@dataclass
class MinerConfig:
    backend_url: str = DEFAULT_BACKEND_URL
    # Exactly one of private_key / keystore. Secrets are excluded from repr().
    private_key: str | None = _secret_field()
    keystore: str | None = None
    keystore_password: str | None = _secret_field()
    name: str | None = None
    model_url: str = DEFAULT_MODEL_URL
    model: str | None = None  # None: use the model server's only model
    model_api_key: str | None = _secret_field()
    model_timeout: float = 600.0  # seconds for one generation
    # Greedy unless the job asks otherwise: the network re-runs answers of jobs that name no
    # temperature on another wallet and compares them (issue 18); sampling would fail those checks.
    temperature: float | None = 0.0
    no_system_role: bool = False
    concurrency: int = 1
    batch: str = "auto"  # auto: the batch protocol when the backend has it; off: one job at a time
    batch_window_ms: int = 20  # the longest a finished result waits for others before posting
    max_tokens: int = 512
    accept_idle: bool = False
    poll_wait: int = 10  # seconds of long-poll, 0..30; also the longest an idle miner takes to stop
    drain_timeout: float = 120.0  # seconds to finish in-flight jobs after SIGTERM
    backoff_cap: float = 30.0  # seconds
    log_level: str = "INFO"
    check: bool = False
    new_keystore: str | None = None


_TRUE = {"1", "true", "yes", "on", "y"}
_FALSE = {"0", "false", "no", "off", "n", ""}


def _env_bool(env: Mapping[str, str], key: str, default: bool) -> bool:
    raw = env.get(key)
    if raw is None:
        return default
    v = raw.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ConfigError(f"{key} must be yes or no (got {raw!r})")


def _num(value: str | None, key: str, kind: type, lo: float, hi: float) -> int | float | None:
    if value is None or value == "":
        return None
    try:
        n = kind(value)
    except ValueError:
        raise ConfigError(f"{key} must be a {'whole number' if kind is int else 'number'} (got {value!r})") from None
    if not lo <= n <= hi:
        raise ConfigError(f"{key} must be between {lo:g} and {hi:g} (got {value})")
    return n


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mia-miner",
        description="The MIA reference miner: answers MIA chat jobs with an OpenAI-compatible "
        "model server (vLLM, Ollama, llama.cpp server). Every flag has an environment variable; "
        "flags win.",
    )
    a = p.add_argument
    a("--backend", dest="backend_url", metavar="URL", help=f"MIA backend URL [MIA_BACKEND_URL, default {DEFAULT_BACKEND_URL}]")
    a("--private-key", metavar="HEX", help="wallet private key; prefer the env var, flags show in `ps` [MIA_MINER_PRIVATE_KEY]")
    a("--keystore", metavar="FILE", help="encrypted JSON keystore instead of a raw key [MIA_MINER_KEYSTORE]")
    a("--keystore-password-file", metavar="FILE", help="file holding the keystore password [MIA_MINER_KEYSTORE_PASSWORD_FILE; or MIA_MINER_KEYSTORE_PASSWORD; else prompted]")
    a("--name", metavar="NAME", help="miner name shown by the backend [MIA_MINER_NAME]")
    a("--model-url", metavar="URL", help=f"OpenAI-compatible server, with or without /v1 [MIA_MODEL_URL, default {DEFAULT_MODEL_URL}]")
    a("--model", metavar="NAME", help="model name as the server lists it [MIA_MODEL_NAME; default: the server's only model]")
    a("--model-api-key", metavar="KEY", help="bearer key for the model server, e.g. vLLM --api-key [MIA_MODEL_API_KEY]")
    a("--model-timeout", metavar="S", help="seconds one generation may take [MIA_MODEL_TIMEOUT, default 600]")
    a("--temperature", metavar="T", help="sampling temperature for jobs that name none; 0 is greedy, which the network's checks expect; 'none' lets the server decide [MIA_MODEL_TEMPERATURE, default 0]")
    a("--no-system-role", action="store_true", default=None, help="fold the system prompt into the first user turn, for chat templates (Mixtral-Instruct) that reject a system role [MIA_MODEL_NO_SYSTEM_ROLE]")
    a("--concurrency", metavar="N", help="jobs in flight at once [MIA_MINER_CONCURRENCY, default 1]")
    a("--batch", choices=["auto", "off"], help="auto: lease and post in batches when the backend offers it; off: one job per request [MIA_MINER_BATCH, default auto]")
    a("--batch-window", metavar="MS", help="milliseconds a finished result waits for others to be posted with it [MIA_MINER_BATCH_WINDOW_MS, default 20]")
    a("--max-tokens", metavar="N", help="upper bound on tokens generated per job [MIA_MINER_MAX_TOKENS, default 512]")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--accept-idle", dest="accept_idle", action="store_true", default=None, help="also serve idle jobs [MIA_MINER_ACCEPT_IDLE=yes]")
    g.add_argument("--no-accept-idle", dest="accept_idle", action="store_false", help="serve chat jobs only (default)")
    a("--poll-wait", metavar="S", help="long-poll seconds, 0..30; an idle miner takes up to this long to stop [MIA_MINER_POLL_WAIT, default 10]")
    a("--drain-timeout", metavar="S", help="seconds to finish in-flight jobs after SIGTERM [MIA_MINER_DRAIN_TIMEOUT, default 120]")
    a("--backoff-cap", metavar="S", help="longest wait between retries [MIA_MINER_BACKOFF_CAP, default 30]")
    a("--log-level", metavar="LEVEL", help="DEBUG, INFO, WARNING [MIA_MINER_LOG_LEVEL, default INFO]")
    a("--check", action="store_true", help="check the wallet, the backend and the model server, print what is wrong, exit")
    a("--new-keystore", metavar="FILE", help="create a new wallet encrypted into FILE (password from MIA_MINER_KEYSTORE_PASSWORD or prompted), print its address, exit")
    return p


def load_config(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> MinerConfig:
    env = os.environ if env is None else env
    ns = build_parser().parse_args(argv)

    def pick(flag: str | None, key: str) -> str | None:
        if flag is not None:
            return flag
        v = env.get(key)
        return v if v not in (None, "") else None

    cfg = MinerConfig()
    cfg.backend_url = (pick(ns.backend_url, "MIA_BACKEND_URL") or cfg.backend_url).rstrip("/")
    cfg.private_key = pick(ns.private_key, "MIA_MINER_PRIVATE_KEY")
    cfg.keystore = pick(ns.keystore, "MIA_MINER_KEYSTORE")
    pw_file = pick(ns.keystore_password_file, "MIA_MINER_KEYSTORE_PASSWORD_FILE")
    if pw_file:
        try:
            with open(pw_file, encoding="utf-8") as fh:
                cfg.keystore_password = fh.read().rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(f"cannot read the keystore password file {pw_file} ({exc.strerror})") from None
    else:
        cfg.keystore_password = env.get("MIA_MINER_KEYSTORE_PASSWORD")
    cfg.name = pick(ns.name, "MIA_MINER_NAME")
    cfg.model_url = pick(ns.model_url, "MIA_MODEL_URL") or cfg.model_url
    cfg.model = pick(ns.model, "MIA_MODEL_NAME")
    cfg.model_api_key = pick(ns.model_api_key, "MIA_MODEL_API_KEY")

    n = _num(pick(ns.model_timeout, "MIA_MODEL_TIMEOUT"), "model timeout", float, 1, 86400)
    cfg.model_timeout = cfg.model_timeout if n is None else float(n)
    t = pick(ns.temperature, "MIA_MODEL_TEMPERATURE")
    if t is not None and t.strip().lower() == "none":
        cfg.temperature = None
    else:
        n = _num(t, "temperature", float, 0, 2)
        cfg.temperature = cfg.temperature if n is None else float(n)
    cfg.no_system_role = (
        ns.no_system_role if ns.no_system_role is not None else _env_bool(env, "MIA_MODEL_NO_SYSTEM_ROLE", False)
    )
    n = _num(pick(ns.concurrency, "MIA_MINER_CONCURRENCY"), "concurrency", int, 1, 256)
    cfg.concurrency = cfg.concurrency if n is None else int(n)
    cfg.batch = (pick(ns.batch, "MIA_MINER_BATCH") or cfg.batch).strip().lower()
    if cfg.batch not in ("auto", "off"):
        raise ConfigError(f"MIA_MINER_BATCH must be auto or off (got {cfg.batch!r})")
    n = _num(pick(ns.batch_window, "MIA_MINER_BATCH_WINDOW_MS"), "batch window", int, 0, 10_000)
    cfg.batch_window_ms = cfg.batch_window_ms if n is None else int(n)
    n = _num(pick(ns.max_tokens, "MIA_MINER_MAX_TOKENS"), "max tokens", int, 1, 1_000_000)
    cfg.max_tokens = cfg.max_tokens if n is None else int(n)
    cfg.accept_idle = (
        ns.accept_idle if ns.accept_idle is not None else _env_bool(env, "MIA_MINER_ACCEPT_IDLE", False)
    )
    n = _num(pick(ns.poll_wait, "MIA_MINER_POLL_WAIT"), "poll wait", int, 0, 30)
    cfg.poll_wait = cfg.poll_wait if n is None else int(n)
    n = _num(pick(ns.drain_timeout, "MIA_MINER_DRAIN_TIMEOUT"), "drain timeout", float, 0, 86400)
    cfg.drain_timeout = cfg.drain_timeout if n is None else float(n)
    n = _num(pick(ns.backoff_cap, "MIA_MINER_BACKOFF_CAP"), "backoff cap", float, 0.5, 3600)
    cfg.backoff_cap = cfg.backoff_cap if n is None else float(n)
    cfg.log_level = (pick(ns.log_level, "MIA_MINER_LOG_LEVEL") or cfg.log_level).upper()
    if cfg.log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"log level must be DEBUG, INFO, WARNING or ERROR (got {cfg.log_level})")
    cfg.check = bool(ns.check)
    cfg.new_keystore = ns.new_keystore

    for label, url in (("backend URL", cfg.backend_url), ("model server URL", cfg.model_url)):
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"the {label} must start with http:// or https:// (got {url!r})")
    if cfg.private_key and cfg.keystore:
        raise ConfigError("give either a private key or a keystore, not both")
    return cfg
