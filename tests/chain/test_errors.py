"""Reverts look different on every provider; they all map to one hierarchy."""

from __future__ import annotations

from eth_abi import encode
from eth_tester.exceptions import TransactionFailed
from eth_utils import keccak
from web3.exceptions import ContractLogicError, Web3RPCError

from chain.errors import (
    ChainError,
    DeadlineExpired,
    InsufficientBalance,
    InsufficientLiquidity,
    NonceError,
    SlippageExceeded,
    TxReverted,
    map_exception,
)

ERROR_STRING = bytes.fromhex("08c379a0")


def error_data(reason: str) -> bytes:
    return ERROR_STRING + encode(["string"], [reason])


def test_eth_tester_transaction_failed() -> None:
    err = map_exception(TransactionFailed("execution reverted: UniswapV2Router: INSUFFICIENT_OUTPUT_AMOUNT"))
    assert isinstance(err, SlippageExceeded)
    assert isinstance(map_exception(TransactionFailed("execution reverted: UniswapV2Router: EXPIRED")), DeadlineExpired)


def test_eth_tester_custom_error_bytes() -> None:
    data = keccak(text="ERC20InsufficientBalance(address,uint256,uint256)")[:4] + encode(
        ["address", "uint256", "uint256"], ["0x" + "11" * 20, 1, 2]
    )
    err = map_exception(TransactionFailed(f"execution reverted: {data!r}"))
    assert isinstance(err, InsufficientBalance) and isinstance(err, TxReverted)
    assert err.data == data


def test_node_contract_logic_error_with_data() -> None:
    exc = ContractLogicError("execution reverted", data="0x" + error_data("UniswapV2Library: INSUFFICIENT_LIQUIDITY").hex())
    assert isinstance(map_exception(exc), InsufficientLiquidity)


def test_rpc_error_message_only() -> None:
    exc = Web3RPCError(
        "{'code': -32603, 'message': \"Error: VM Exception while processing transaction: reverted with "
        "reason string 'UniswapV2Router: INSUFFICIENT_OUTPUT_AMOUNT'\"}"
    )
    assert isinstance(map_exception(exc), SlippageExceeded)


def test_non_revert_errors() -> None:
    assert isinstance(map_exception(ValueError("insufficient funds for gas * price + value")), InsufficientBalance)
    assert isinstance(map_exception(ValueError("nonce too low")), NonceError)
    unknown = map_exception(RuntimeError("boom"))
    assert type(unknown) is ChainError
    reverted = map_exception(TransactionFailed("execution reverted: something else"))
    assert type(reverted) is TxReverted and reverted.reason == "something else"


def test_message_only_custom_error_and_fork_strings() -> None:
    # some providers drop the revert data and keep only a message naming the custom error;
    # the address inside it is no revert data
    owner = "0x" + "11" * 20
    exc = Web3RPCError(
        "{'code': -32603, 'message': \"Error: VM Exception while processing transaction: reverted with "
        f"custom error 'ERC20InsufficientBalance(\\\"{owner}\\\", 0, 10)'\"}}"
    )
    err = map_exception(exc)
    assert isinstance(err, InsufficientBalance) and isinstance(err, TxReverted)
    assert err.data is None
    allowance = map_exception(TransactionFailed("execution reverted: ERC20InsufficientAllowance"))
    assert isinstance(allowance, InsufficientBalance)
    # @uniswap/lib >= 2 and the PancakeSwap router word it differently
    newer = map_exception(TransactionFailed("execution reverted: TransferHelper::transferFrom: transferFrom failed"))
    assert isinstance(newer, InsufficientBalance)
    pancake = map_exception(TransactionFailed("execution reverted: PancakeRouter: EXPIRED"))
    assert isinstance(pancake, DeadlineExpired)
