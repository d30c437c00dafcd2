"""Random bearer secrets (API keys, session tokens). Only their SHA-256 is ever stored."""

from __future__ import annotations

import hashlib
import secrets

API_KEY_PREFIX = "mia_k_"
TOKEN_PREFIX = "mia_t_"


def new_secret(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
