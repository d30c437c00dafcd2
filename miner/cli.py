"""The `mia-miner` command."""

from __future__ import annotations

import asyncio
import getpass
import logging
import signal
import sys
from typing import Sequence

from miner.client import BackendClient
from miner.config import ConfigError, MinerConfig, load_config
from miner.model import ModelClient
from miner.wallet import Wallet, WalletError

log = logging.getLogger("miner")


class _Redact(logging.Filter):
    """Defence in depth: even if a secret reached a log call, it is printed as ***."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if s and len(s) >= 8]

    def filter(self, record: logging.LogRecord) -> bool:
        if self._secrets:
            msg = record.getMessage()
            redacted = msg
            for s in self._secrets:
                redacted = redacted.replace(s, "***")
            if redacted != msg:
                record.msg, record.args = redacted, None
        return True


def _secrets(cfg: MinerConfig) -> list[str]:
    out: list[str] = []
    for s in (cfg.private_key, cfg.keystore_password, cfg.model_api_key):
        if s:
            s = s.strip()
            out.append(s)
            if s.lower().startswith("0x"):
                out.append(s[2:])
    return out


def setup_logging(cfg: MinerConfig) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_Redact(_secrets(cfg)))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(cfg.log_level)
    # httpx logs every request at INFO; one line per job is what an operator wants.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)


def _password(cfg: MinerConfig, prompt: str) -> str:
    if cfg.keystore_password is not None:
        return cfg.keystore_password
    if sys.stdin.isatty():
        return getpass.getpass(prompt)
    raise WalletError(
        "the keystore needs a password: set MIA_MINER_KEYSTORE_PASSWORD or "
        "--keystore-password-file, or run in a terminal to be prompted"
    )


def load_wallet(cfg: MinerConfig) -> Wallet:
    if cfg.private_key:
        return Wallet.from_private_key(cfg.private_key)
    if cfg.keystore:
        return Wallet.from_keystore(cfg.keystore, _password(cfg, f"Password for {cfg.keystore}: "))
    raise WalletError(
        "no wallet configured: set MIA_MINER_PRIVATE_KEY, or --keystore FILE "
        "(create one with `mia-miner --new-keystore FILE`)"
    )


async def _mine(cfg: MinerConfig, wallet: Wallet) -> int:
    from miner.runner import Miner  # runner imports config; keep --help fast

    backend = BackendClient(cfg.backend_url, wallet, name=cfg.name)
    model = ModelClient(
        cfg.model_url,
        cfg.model,
        api_key=cfg.model_api_key,
        timeout=cfg.model_timeout,
        temperature=cfg.temperature,
    )
    miner = Miner(cfg, backend, model)
    loop = asyncio.get_running_loop()
    signals = 0

    def on_signal(signame: str) -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            log.info("%s received", signame)
            miner.request_stop()
        else:
            log.warning("%s received again: giving in-flight jobs back and exiting", signame)
            miner.abort()

    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, on_signal, sig.name)
        except (NotImplementedError, RuntimeError):  # non-Unix or not the main thread
            pass
    try:
        return await miner.run()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.remove_signal_handler(sig)
            except (NotImplementedError, RuntimeError):
                pass
        await backend.aclose()
        await model.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        cfg = load_config(argv)
    except ConfigError as exc:
        print(f"mia-miner: {exc}", file=sys.stderr)
        return 2
    setup_logging(cfg)

    if cfg.new_keystore:
        try:
            pw = _password(cfg, "Password for the new keystore: ")
            if not pw:
                raise WalletError("refusing to create a keystore with an empty password")
            address = Wallet.write_keystore(cfg.new_keystore, pw)
        except WalletError as exc:
            print(f"mia-miner: {exc}", file=sys.stderr)
            return 2
        print(f"created {cfg.new_keystore} for address {address}")
        return 0

    if cfg.check:
        from miner.check import run_check

        return asyncio.run(run_check(cfg, load_wallet))

    try:
        wallet = load_wallet(cfg)
    except WalletError as exc:
        print(f"mia-miner: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_mine(cfg, wallet))
