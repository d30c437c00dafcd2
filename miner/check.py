"""`mia-miner --check`: one plain sentence per problem with the wallet, backend or model server."""

from __future__ import annotations

from typing import Callable

from miner.client import BackendClient, BackendError, BackendUnavailable
from miner.config import MinerConfig
from miner.model import ModelClient, ModelError
from miner.prompt import strict_alternation
from miner.wallet import Wallet, WalletError


async def run_check(
    cfg: MinerConfig,
    wallet_loader: Callable[[MinerConfig], Wallet],
    out: Callable[[str], None] = print,
) -> int:
    problems = 0

    def ok(text: str) -> None:
        out(f"ok       {text}")

    def note(text: str) -> None:
        out(f"note     {text}")

    def bad(text: str) -> None:
        nonlocal problems
        problems += 1
        out(f"PROBLEM  {text}")

    # 1. wallet
    wallet: Wallet | None = None
    try:
        wallet = wallet_loader(cfg)
        ok(f"wallet: address {wallet.address}")
    except WalletError as exc:
        bad(f"Wallet: {exc}.")

    # 2. backend
    backend_up = False
    probe = BackendClient(cfg.backend_url, wallet or _placeholder_wallet(), name=cfg.name)
    try:
        try:
            status, detail = await probe.health()
        except BackendUnavailable as exc:
            bad(f"Cannot reach the backend at {cfg.backend_url} ({exc}).")
        else:
            if status == 200:
                backend_up = True
                ok(f"backend: {cfg.backend_url} is healthy")
            elif status == 503:
                bad(f"The backend at {cfg.backend_url} is running but reports itself unhealthy (HTTP 503{': ' + detail if detail else ''}).")
            else:
                bad(f"The backend at {cfg.backend_url} answered /health with HTTP {status}; is this the MIA backend's URL?")
        if backend_up and wallet is not None:
            try:
                registered, why = await probe.try_login()
            except BackendError as exc:
                bad(f"The backend refused to sign this wallet in ({exc}).")
            else:
                if registered:
                    ok("backend: this wallet signs in")
                else:
                    note(f"this wallet is not registered yet ({why}); mia-miner registers it on its first run")
    finally:
        await probe.aclose()

    # 3. model server
    model = ModelClient(
        cfg.model_url, cfg.model, api_key=cfg.model_api_key, timeout=min(cfg.model_timeout, 120.0),
        temperature=cfg.temperature,
    )
    try:
        try:
            served = await model.list_models()
        except ModelError as exc:
            bad(f"Model server: {exc}.")
            served = None
        if served is not None:
            if cfg.model is None:
                if len(served) == 1:
                    model.model = served[0]
                    ok(f"model server: {model.base_url} serves {served[0]} (used, since no --model was given)")
                else:
                    bad(
                        f"The model server at {model.base_url} serves "
                        f"{', '.join(served) if served else 'no models'}; choose one with --model."
                    )
            elif cfg.model in served or f"{cfg.model}:latest" in served:  # Ollama's tags
                ok(f"model server: {model.base_url} serves {cfg.model}")
            else:
                bad(
                    f"The model server at {model.base_url} does not serve the model {cfg.model!r}; "
                    f"it serves: {', '.join(served) if served else 'nothing'}."
                )
        usable = served is not None and (
            cfg.model is None or cfg.model in served or f"{cfg.model}:latest" in served
        )
        if model.model is not None and usable:
            await _test_chat(model, cfg.no_system_role, ok, note, bad)
    finally:
        await model.aclose()

    out("All checks passed." if problems == 0 else f"{problems} problem(s) found.")
    return 0 if problems == 0 else 1


async def _test_chat(model: ModelClient, no_system_role: bool, ok, note, bad) -> None:  # type: ignore[no-untyped-def]
    # Shaped like a real job: business context as a system message, then the user's turn.
    messages = [{"role": "system", "content": "You are a support assistant."},
                {"role": "user", "content": "Reply with the word OK."}]
    try:
        c = await model.chat(strict_alternation(messages) if no_system_role else messages, 8)
    except ModelError as exc:
        if not no_system_role and "HTTP 4" in str(exc):
            try:
                await model.chat(strict_alternation(messages), 8)
            except ModelError:
                pass
            else:
                bad(f"The model's chat template rejects a system message ({exc}); "
                    "run with --no-system-role (MIA_MODEL_NO_SYSTEM_ROLE=yes).")
                return
        bad(f"The model server could not answer a test chat: {exc}.")
        return
    tokens = "?" if c.completion_tokens is None else c.completion_tokens
    ok(f"model server: test chat answered ({tokens} tokens)")
    if c.completion_tokens is None:
        note("the model server reports no token usage; results will be posted without token counts")


def _placeholder_wallet() -> Wallet:
    # Only used to probe /health when the real wallet could not be loaded; never signs anything.
    return Wallet.from_private_key("11" * 32)
