"""One error hierarchy for everything that can go wrong on a chain.

Providers disagree on how a revert looks: eth-tester raises ``TransactionFailed``,
web3 raises ``ContractLogicError`` / ``ContractCustomError`` / ``ContractPanicError`` for
nodes that return revert data, and some nodes only return a JSON-RPC error
(``Web3RPCError``). :func:`map_exception` turns all of them into a :class:`ChainError`.
"""

from __future__ import annotations

import ast
import re
from typing import Any

from eth_utils import keccak


class ChainError(Exception):
    """Base of every error raised by ``chain``."""


class ConfigError(ChainError):
    """A setting is missing or inconsistent (wrong chain id, bad key, bad address)."""


class ArtifactsMissing(ChainError):
    """Contract artifacts (contracts/build or contracts/node_modules) are not installed."""


class ContractNotFound(ChainError):
    """No contract (or not the expected contract) at an address, e.g. a wrong router."""


class TxNotFound(ChainError):
    """The chain knows no transaction with this hash."""


class InsufficientBalance(ChainError):
    """The account cannot pay: too few tokens, too small an allowance, or no gas money."""


class PriceImpactTooHigh(ChainError):
    """A swap would move the pool price more than MAX_PRICE_IMPACT_BPS."""


class FeeCapExceeded(ChainError):
    """The network's base fee is above MAX_FEE_GWEI: nothing was signed or sent."""


class NonceError(ChainError):
    """A nonce is already used, or the local nonce state is inconsistent with the chain."""


class TxTimeout(ChainError):
    """No receipt (with enough confirmations) within the timeout, replacements included."""

    def __init__(self, message: str, tx_hashes: tuple[str, ...] = (), nonce: int | None = None):
        super().__init__(message)
        self.tx_hashes = tx_hashes
        self.nonce = nonce


class TxReverted(ChainError):
    """A call or transaction reverted. ``tx_hash`` is set when it was mined."""

    def __init__(self, reason: str, *, tx_hash: str | None = None, data: bytes | None = None):
        super().__init__(reason)
        self.reason = reason
        self.tx_hash = tx_hash
        self.data = data


class SlippageExceeded(TxReverted):
    """The pool paid less than amountOutMin (the price moved after the quote)."""


class DeadlineExpired(TxReverted):
    """The router's deadline passed before the transaction was mined."""


class InsufficientLiquidity(TxReverted):
    """The pool has no (or not enough) liquidity for this trade."""


class InsufficientBalanceReverted(TxReverted, InsufficientBalance):
    """A token transfer reverted for lack of balance or allowance."""


def _selector(signature: str) -> bytes:
    return keccak(text=signature)[:4]


# Revert reason substrings (Uniswap V2 and forks, OpenZeppelin 4 strings) -> error class.
_REASONS: tuple[tuple[str, type[TxReverted]], ...] = (
    ("INSUFFICIENT_OUTPUT_AMOUNT", SlippageExceeded),
    ("EXCESSIVE_INPUT_AMOUNT", SlippageExceeded),
    ("EXPIRED", DeadlineExpired),
    ("INSUFFICIENT_LIQUIDITY", InsufficientLiquidity),
    ("INSUFFICIENT_INPUT_AMOUNT", InsufficientLiquidity),
    ("TRANSFER_FROM_FAILED", InsufficientBalanceReverted),
    ("TRANSFER_FAILED", InsufficientBalanceReverted),
    ("transferFrom failed", InsufficientBalanceReverted),  # @uniswap/lib >= 2, PancakeSwap
    # OpenZeppelin 5 custom errors named in a message (providers that drop the revert data)
    ("ERC20InsufficientBalance", InsufficientBalanceReverted),
    ("ERC20InsufficientAllowance", InsufficientBalanceReverted),
    ("transfer amount exceeds balance", InsufficientBalanceReverted),
    ("transfer amount exceeds allowance", InsufficientBalanceReverted),
    ("insufficient allowance", InsufficientBalanceReverted),
    ("ds-math-sub-underflow", InsufficientBalanceReverted),
)

# OpenZeppelin 5 custom errors -> (name, error class).
_SELECTORS: dict[bytes, tuple[str, type[TxReverted]]] = {
    _selector("ERC20InsufficientBalance(address,uint256,uint256)"): (
        "ERC20InsufficientBalance",
        InsufficientBalanceReverted,
    ),
    _selector("ERC20InsufficientAllowance(address,uint256,uint256)"): (
        "ERC20InsufficientAllowance",
        InsufficientBalanceReverted,
    ),
}
_ERROR_STRING = _selector("Error(string)")
_HEX_DATA = re.compile(r"0x[0-9a-fA-F]{8,}")
_NO_GAS_MONEY = (
    "insufficient funds",
    "sender doesn't have enough funds",
    "cannot afford txn",
    "exceeds balance",
)


def _revert_data(exc: BaseException) -> bytes | None:
    data = getattr(exc, "data", None)
    if isinstance(data, (bytes, bytearray)):
        return bytes(data)
    if isinstance(data, str) and data.startswith("0x"):
        try:
            return bytes.fromhex(data[2:])
        except ValueError:
            pass
    for arg in exc.args:
        if isinstance(arg, (bytes, bytearray)):
            return bytes(arg)
        if isinstance(arg, BaseException):
            inner = _revert_data(arg)
            if inner is not None:
                return inner
        if isinstance(arg, str):
            # eth-tester: "execution reverted: b'\\xe4P\\xd3\\x8c...'" for custom errors.
            idx = arg.find("b'")
            if idx == -1:
                idx = arg.find('b"')
            if idx != -1:
                try:
                    value = ast.literal_eval(arg[idx:])
                except (ValueError, SyntaxError):
                    value = None
                if isinstance(value, bytes):
                    return value
            for match in _HEX_DATA.finditer(arg):
                # ABI revert data is a selector plus 32-byte words; an address (20 bytes) or a
                # hash (32 bytes) quoted in a message is not
                if (len(match.group(0)) - 2) % 64 == 8:
                    return bytes.fromhex(match.group(0)[2:])
    return None


def _message(exc: BaseException) -> str:
    parts = [str(exc)]
    msg = getattr(exc, "message", None)
    if isinstance(msg, str):
        parts.append(msg)
    rpc = getattr(exc, "rpc_response", None)
    if isinstance(rpc, dict) and isinstance(rpc.get("error"), dict):
        parts.append(str(rpc["error"].get("message", "")))
    return " | ".join(p for p in parts if p)


def classify_revert(
    reason: str, data: bytes | None = None, *, tx_hash: str | None = None
) -> TxReverted:
    """Build the most specific :class:`TxReverted` for a revert reason and/or revert data."""
    if data and len(data) >= 4:
        sel = data[:4]
        if sel in _SELECTORS:
            name, cls = _SELECTORS[sel]
            return cls(f"{name}: {reason}" if reason else name, tx_hash=tx_hash, data=data)
        if sel == _ERROR_STRING:
            try:
                from eth_abi import decode

                (decoded,) = decode(["string"], data[4:])
                reason = decoded
            except Exception:  # undecodable data: keep the text we have
                pass
    for needle, cls in _REASONS:
        if needle in reason:
            return cls(reason, tx_hash=tx_hash, data=data)
    return TxReverted(reason or "execution reverted", tx_hash=tx_hash, data=data)


def is_revert(exc: BaseException) -> bool:
    from eth_tester.exceptions import TransactionFailed
    from web3.exceptions import ContractLogicError

    if isinstance(exc, (TransactionFailed, ContractLogicError)):
        return True
    return "revert" in _message(exc).lower()


def map_exception(exc: BaseException, *, tx_hash: str | None = None) -> ChainError:
    """Map any provider exception to a ChainError. Already-mapped errors pass through."""
    if isinstance(exc, ChainError):
        return exc
    message = _message(exc)
    if any(s in message.lower() for s in _NO_GAS_MONEY) and not is_revert(exc):
        return InsufficientBalance(f"not enough ether for gas/value: {message}")
    lowered = message.lower()
    if "nonce" in lowered and any(w in lowered for w in ("too low", "too high", "invalid transaction nonce", "already used")):
        return NonceError(message)
    if is_revert(exc):
        reason = message
        for prefix in ("execution reverted:", "execution reverted"):
            idx = reason.find(prefix)
            if idx != -1:
                reason = reason[idx + len(prefix) :].strip()
                break
        return classify_revert(reason, _revert_data(exc), tx_hash=tx_hash)
    return ChainError(f"{type(exc).__name__}: {message}")


def error_from_rpc(error: Any) -> str:
    """Text of a JSON-RPC error object, for messages."""
    if isinstance(error, dict):
        return str(error.get("message", error))
    return str(error)
