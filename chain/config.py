from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from eth_utils import is_address, to_checksum_address

from chain.errors import ConfigError

DEFAULT_BURN_ADDRESS = "0x000000000000000000000000000000000000dEaD"
ETH_TESTER = "eth-tester"


@dataclass(frozen=True)
class ChainConfig:
    """Everything ``chain`` needs, built by the app's settings. Secrets never appear in repr().

    Units: ``*_bps`` are basis points (1/100 of a percent), ``max_fee_gwei`` is gwei (a Decimal
    or int, converted to wei exactly), ``tx_timeout_seconds`` is seconds per attempt before a
    stuck transaction is replaced with the same nonce and higher fees.
    """

    rpc_url: str = ETH_TESTER
    chain_id: int | None = None
    treasury_private_key: str | None = field(default=None, repr=False)
    treasury_keystore: Path | None = None
    treasury_keystore_password: str | None = field(default=None, repr=False)
    serv_token: str | None = None
    quote_token: str | None = None
    router: str | None = None
    burn_address: str = DEFAULT_BURN_ADDRESS
    max_slippage_bps: int = 100
    max_price_impact_bps: int = 200
    confirmations: int = 1
    max_fee_gwei: Decimal = Decimal(200)
    tx_timeout_seconds: float = 120.0
    max_replacements: int = 3
    deadline_seconds: int = 300

    def __post_init__(self) -> None:
        for name in ("serv_token", "quote_token", "router", "burn_address"):
            value = getattr(self, name)
            if value is None:
                continue
            if not is_address(value):
                raise ConfigError(f"{name} is not an address: {value!r}")
            object.__setattr__(self, name, to_checksum_address(value))
        if not 0 <= self.max_slippage_bps < 10_000:
            raise ConfigError("max_slippage_bps must be in [0, 10000)")
        if not 0 < self.max_price_impact_bps < 10_000:
            raise ConfigError("max_price_impact_bps must be in (0, 10000)")
        if self.confirmations < 0:
            raise ConfigError("confirmations must be >= 0")
        if Decimal(self.max_fee_gwei) <= 0:
            raise ConfigError("max_fee_gwei must be positive")
        if self.tx_timeout_seconds <= 0:
            raise ConfigError("tx_timeout_seconds must be positive")
        if self.treasury_private_key and self.treasury_keystore:
            raise ConfigError("give either treasury_private_key or treasury_keystore, not both")

    @property
    def max_fee_wei(self) -> int:
        wei = Decimal(self.max_fee_gwei) * 10**9
        if wei != wei.to_integral_value():
            raise ConfigError("max_fee_gwei has more precision than 1 wei")
        return int(wei)

    @property
    def has_signer(self) -> bool:
        return bool(self.treasury_private_key or self.treasury_keystore)
