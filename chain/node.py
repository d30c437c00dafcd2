"""A JSON-RPC node over HTTP backed by an in-process eth-tester (py-evm) chain.

For ``make dev``: the API and the worker processes share one local chain. Every transaction is
mined on arrival (auto-mine); ``--block-time`` also mines an empty block every N seconds so
waits for confirmations end. Reverts are answered like geth: code 3, "execution reverted: ...",
with the revert data, so web3 raises ContractLogicError on the client side.

    python -m chain.node --host 127.0.0.1 --port 8545
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from eth_abi import decode, encode
from web3 import EthereumTesterProvider, Web3

from chain.errors import _revert_data

log = logging.getLogger("chain.node")

_ERROR_SELECTOR = bytes.fromhex("08c379a0")


def _jsonable(value: Any, key: str | None = None) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        if key == "logsBloom":
            return "0x" + value.to_bytes(256, "big").hex()
        return hex(value)
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    if isinstance(value, dict) or hasattr(value, "items"):
        return {k: _jsonable(v, k) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, key) for v in value]
    return value


class EthTesterNode:
    """Thread-safe JSON-RPC dispatcher over web3's EthereumTesterProvider."""

    def __init__(self) -> None:
        self.w3 = Web3(EthereumTesterProvider())
        self.tester = self.w3.provider.ethereum_tester  # type: ignore[attr-defined]
        self._request = self.w3.provider.request_func(self.w3, self.w3.middleware_onion)
        self._lock = threading.Lock()

    def mine(self) -> None:
        with self._lock:
            self.tester.mine_blocks(1)

    def handle(self, request: Any) -> Any:
        if isinstance(request, list):
            return [self._one(r) for r in request]
        return self._one(request)

    def _one(self, request: Any) -> dict[str, Any]:
        if not isinstance(request, dict) or "method" not in request:
            return {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "invalid request"}}
        rid = request.get("id")
        method, params = request["method"], request.get("params") or []
        try:
            with self._lock:
                response = self._request(method, params)
        except Exception as exc:  # reverts and validation errors become JSON-RPC errors
            return {"jsonrpc": "2.0", "id": rid, "error": self._error(exc)}
        if "error" in response:
            return {"jsonrpc": "2.0", "id": rid, "error": response["error"]}
        return {"jsonrpc": "2.0", "id": rid, "result": _jsonable(response.get("result"))}

    @staticmethod
    def _error(exc: Exception) -> dict[str, Any]:
        message = str(exc)
        if "revert" not in message.lower() and type(exc).__name__ != "TransactionFailed":
            return {"code": -32000, "message": message}
        data = _revert_data(exc)
        if data is None:
            reason = message.split("execution reverted:", 1)[-1].strip()
            if reason and reason != message:
                data = _ERROR_SELECTOR + encode(["string"], [reason])
                message = f"execution reverted: {reason}"
        elif data[:4] == _ERROR_SELECTOR:
            try:
                (reason,) = decode(["string"], data[4:])
                message = f"execution reverted: {reason}"
            except Exception:  # malformed Error(string): keep eth-tester's text
                pass
        else:
            message = "execution reverted"  # like geth: a custom error is only in "data"
        error: dict[str, Any] = {"code": 3, "message": message}
        if data is not None:
            error["data"] = "0x" + data.hex()
        return error


def make_server(host: str, port: int, node: EthTesterNode | None = None) -> ThreadingHTTPServer:
    node = node or EthTesterNode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            try:
                request = json.loads(self.rfile.read(length) or b"null")
                body = node.handle(request)
            except json.JSONDecodeError:
                body = {"jsonrpc": "2.0", "id": None, "error": {"code": -32700, "message": "parse error"}}
            payload = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            log.debug(format, *args)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    server.node = node  # type: ignore[attr-defined]
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chain.node", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8545)
    parser.add_argument("--block-time", type=float, default=0.0,
                        help="also mine an empty block every N seconds (0: only on transactions)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    server = make_server(args.host, args.port)
    node: EthTesterNode = server.node  # type: ignore[attr-defined]
    stop = threading.Event()
    if args.block_time > 0:
        def miner() -> None:
            while not stop.wait(args.block_time):
                node.mine()
        threading.Thread(target=miner, daemon=True).start()
    chain_id = node.w3.eth.chain_id
    print(f"eth-tester JSON-RPC node on http://{args.host}:{args.port} (chain id {chain_id})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
