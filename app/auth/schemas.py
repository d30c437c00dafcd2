from __future__ import annotations

from datetime import datetime

from pydantic import Field

from app.schemas import QueryParams, RequestBody, ResponseBody

MAX_MESSAGE = 4096
SIGNATURE = Field(min_length=2, max_length=2050, pattern=r"^(0x)?[0-9a-fA-F]+$",
                  description="hex wallet signature (EIP-191; longer for ERC-1271 wallets)")


class NonceQuery(QueryParams):
    address: str = Field(min_length=40, max_length=42, description="the wallet that will sign in")


class NonceOut(ResponseBody):
    nonce: str
    domain: str
    uri: str
    chain_id: int
    issued_at: datetime
    expiration_time: datetime
    message: str = Field(description="the complete EIP-4361 message; sign it as-is (personal_sign)")


class SignInBody(RequestBody):
    message: str = Field(min_length=1, max_length=MAX_MESSAGE)
    signature: str = SIGNATURE


class LoginOut(ResponseBody):
    token: str
    expires_at: datetime
    address: str
    roles: list[str]


class LogoutOut(ResponseBody):
    revoked: bool = Field(description="the token used for this request no longer works")
