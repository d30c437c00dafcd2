"""How a business pays in on chain: what GET /account tells it (the watcher, deposits.py,
reads the same scheme: the reference's bytes appended to a plain ERC-20 transfer's calldata)."""

from __future__ import annotations

from app.config import Settings

HOW = ("Pay in the stablecoin at quote_token_address, to treasury_address, on chain chain_id: "
       "append these bytes (deposit_memo_hex, your deposit_ref) to the calldata of a plain "
       "ERC-20 transfer(treasury, amount). Token contracts ignore the extra bytes; the network "
       "reads them to credit this business once the transfer is final. A transfer without "
       "them cannot be attributed to you: ask an operator.")


def memo_hex(deposit_ref: str | None) -> str | None:
    return None if deposit_ref is None else "0x" + deposit_ref


def treasury_address(settings: Settings, built: str | None = None) -> str | None:
    """The treasury's address, as /burns knows it: TREASURY_ADDRESS, else the treasury handle
    already built in this process (`built`), else the address of TREASURY_PRIVATE_KEY. None
    when none is configured (a keystore alone needs its password decrypted: not done here)."""
    if settings.treasury_address:
        return settings.treasury_address
    if built:
        return built
    key = settings.treasury_private_key
    if key is None:
        return None
    from eth_account import Account

    try:
        return str(Account.from_key(key.get_secret_value()).address)
    except (ValueError, TypeError):  # a malformed key: /burns reports it, not this page
        return None
