"""The miner signs only its own backend's sign-in message (miner/signin.py): a malicious backend
on 127.0.0.1 that hands out another site's EIP-4361 message gets no signature."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.auth.siwe import SiweMessage
from miner.client import BackendClient, BackendRejected
from miner.signin import ForeignMessage, check_sign_in_message, origin
from miner.wallet import Wallet
from tests.miner.support import UvicornThread, new_key


@dataclass
class Malicious:
    """Hands out the message `make(url, address)` returns; records every sign-in attempt."""

    make: object = None
    signed: list[dict] = field(default_factory=list)
    url: str = ""

    def app(self) -> Starlette:
        async def nonce(request: Request) -> JSONResponse:
            address = request.query_params["address"]
            return JSONResponse({"message": self.make(self.url, address)})  # type: ignore[operator]

        async def sign_in(request: Request) -> JSONResponse:
            self.signed.append(await request.json())
            return JSONResponse({"token": "t", "expires_at": "2099-01-01T00:00:00Z",
                                 "roles": ["miner"]})
        return Starlette(routes=[Route("/auth/nonce", nonce),
                                 Route("/auth/login", sign_in, methods=["POST"]),
                                 Route("/register_miner", sign_in, methods=["POST"])])


@pytest.fixture
def malicious() -> Iterator[Malicious]:
    m = Malicious()
    with UvicornThread(m.app()) as srv:
        m.url = srv.url
        yield m


def message(domain: str, uri: str, address: str, *, statement: str | None = "Sign in.") -> str:
    scheme, _, host = domain.partition("://")
    return SiweMessage(domain=host, address=address, uri=uri, version="1", chain_id=1,
                       nonce="abcdefgh1234", issued_at=datetime.now(timezone.utc),
                       statement=statement, scheme=None if scheme == "https" else scheme
                       ).to_text()


def own_host(url: str) -> str:
    return url.removeprefix("http://")


ATTACKS = {
    "another site": lambda url, a: message("https://victim.example", "https://victim.example", a),
    "our domain, another URI": lambda url, a: message(url, "https://victim.example/login", a),
    "another URI hidden behind ours in the statement": lambda url, a: message(
        url, "https://victim.example", a, statement=f"URI: {url}"),
    "our host over https": lambda url, a: message(f"https://{own_host(url)}", url, a),
    "another port": lambda url, a: message(url.rsplit(":", 1)[0] + ":1", url, a),
    "another wallet": lambda url, a: message(url, url, Wallet.from_private_key(new_key()).address),
    "not EIP-4361": lambda url, a: f"{a} please sign this",
}


@pytest.mark.parametrize("attack", ATTACKS)
async def test_refuses_to_sign_a_message_for_somewhere_else(attack: str, malicious) -> None:  # type: ignore[no-untyped-def]
    malicious.make = ATTACKS[attack]
    client = BackendClient(malicious.url, Wallet.from_private_key(new_key()))
    try:
        with pytest.raises(BackendRejected) as refused:
            await client.ensure_token()
    finally:
        await client.aclose()
    assert refused.value.code == "foreign_sign_in" and "refusing to sign" in str(refused.value)
    assert malicious.signed == []  # no signature ever left the miner


async def test_signs_its_own_backends_message(malicious) -> None:  # type: ignore[no-untyped-def]
    malicious.make = lambda url, a: message(url, url + "/api", a)
    client = BackendClient(malicious.url + "/", Wallet.from_private_key(new_key()))
    try:
        await client.ensure_token()
    finally:
        await client.aclose()
    assert len(malicious.signed) == 1


def test_origins_compare_without_default_ports_or_case() -> None:
    assert origin("https://API.example.com:443/x") == origin("https://api.example.com")
    assert origin("http://127.0.0.1:80") == ("http", "127.0.0.1")
    assert origin("http://[::1]:8000") == ("http", "[::1]:8000")
    address = Wallet.from_private_key(new_key()).address
    check_sign_in_message(message("https://api.example.com", "https://api.example.com:443/v1",
                                  address), "https://api.example.com", address)
    with pytest.raises(ForeignMessage):  # EIP-4361: no scheme means https
        check_sign_in_message(message("https://api.example.com", "https://api.example.com",
                                      address), "http://api.example.com", address)
