"""A web3 middleware timing every JSON-RPC call (mia_chain_rpc_seconds): an exception or an
error answer counts as outcome="error"."""

from __future__ import annotations

import time
from typing import Any

from web3.middleware.base import Web3Middleware

from app.observability import metrics, tracing


class RpcTimer(Web3Middleware):
    async def async_wrap_make_request(self, make_request: Any) -> Any:
        async def timed(method: Any, params: Any) -> Any:
            start = time.perf_counter()
            ok = False
            try:
                with tracing.child(f"rpc {method}"):  # a buyback's chain calls, in its trace
                    response = await make_request(method, params)
                ok = not (isinstance(response, dict) and response.get("error"))
                return response
            finally:
                metrics.observe_chain_rpc(str(method), time.perf_counter() - start, ok)
        return timed


def instrument(w3: Any) -> Any:
    """Add the timer to an AsyncWeb3 (outermost, so it times retries and errors too)."""
    w3.middleware_onion.add(RpcTimer, name="mia_rpc_timer")
    return w3
