"""Who is calling: a client (business API key, or an anonymous widget) or a signed-in wallet."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Client:
    business_id: int | None  # None for anonymous widget traffic
    api_key_id: int | None
    scopes: frozenset[str]

    @property
    def anonymous(self) -> bool:
        return self.api_key_id is None


@dataclass(frozen=True)
class Wallet:
    address: str  # EIP-55
    miner_id: int | None
    roles: frozenset[str]
    suspended: bool = False  # its miner is suspended by an operator: no miner endpoint answers
