"""The one sender for all transactions of an account.

Flow: ``prepare(tx)`` estimates gas, prices the fees, takes a nonce and signs, returning the
hash and nonce BEFORE anything is broadcast (persist them); ``broadcast(prepared)`` sends it
(idempotent); ``wait_or_replace`` waits for N confirmations and, when an attempt times out,
re-signs the same nonce with higher fees. ``lookup(hash)`` and ``nonce_state(nonce)`` tell what
became of a transaction after a crash.

Nonces: the next nonce is max(chain pending nonce, persisted next nonce, in-memory next nonce,
1 + the highest nonce of the caller's stored signed transactions that may still be mined), so a
restart never reuses a nonce. With ``outstanding`` (the caller's stored signed bytes), a stored
transaction the node no longer holds (a reorg dropped it, a node forgot it) is re-broadcast from
those bytes before a new nonce is handed out: a nonce of ours is never given to a new
transaction while a signed one with it could still be mined. The price of that rule: a
transaction that was prepared but never broadcast leaves a gap that blocks later nonces, so
callers either broadcast (or re-broadcast ``prepared.raw``) every prepared transaction, or
``release`` it.

Receipts count only on the canonical chain: a receipt whose block hash is not the chain's block
at that number now (a reorg, a lagging node behind a load balancer) is treated as no receipt, at
every confirmation check (``canonical_receipt``).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address
from web3 import AsyncWeb3
from web3.exceptions import BlockNotFound, TimeExhausted, TransactionNotFound

from chain.config import ChainConfig
from chain.errors import (
    ChainError,
    ConfigError,
    FeeCapExceeded,
    InsufficientBalance,
    NonceError,
    TxReverted,
    TxTimeout,
    map_exception,
)

log = logging.getLogger("chain.tx")

GWEI = 10**9


class TxStatus(str, Enum):
    PENDING = "pending"  # known to the node, not mined
    SUCCESS = "success"  # mined, status 1
    REVERTED = "reverted"  # mined, status 0
    UNKNOWN = "unknown"  # not known to the node (never sent, dropped, or replaced)


class NonceStatus(str, Enum):
    MINED = "mined"  # a transaction with this nonce is in a block
    PENDING = "pending"  # the node holds a pending transaction with this nonce
    FREE = "free"  # nothing on chain uses it yet


@dataclass(frozen=True)
class PreparedTx:
    """A signed, not yet broadcast transaction. Fees and gas are in wei / gas units."""

    tx_hash: str
    nonce: int
    sender: str
    tx: Mapping[str, Any]
    raw: bytes = field(repr=False)

    @classmethod
    def from_raw(cls, raw: bytes | str) -> PreparedTx:
        """Rebuild a PreparedTx from the signed bytes a caller persisted (``prepared.raw``),
        e.g. to re-broadcast or ``wait_or_replace`` it after a restart."""
        from eth_account.typed_transactions import TypedTransaction
        from hexbytes import HexBytes

        raw_bytes = bytes.fromhex(raw[2:] if raw.startswith("0x") else raw) if isinstance(raw, str) else bytes(raw)
        if not raw_bytes or raw_bytes[0] != 2:
            raise ChainError("only EIP-1559 (type 2) transactions are supported")
        fields = TypedTransaction.from_bytes(HexBytes(raw_bytes)).as_dict()
        tx: dict[str, Any] = {
            "value": int(fields["value"]),
            "nonce": int(fields["nonce"]),
            "gas": int(fields["gas"]),
            "maxFeePerGas": int(fields["maxFeePerGas"]),
            "maxPriorityFeePerGas": int(fields["maxPriorityFeePerGas"]),
            "chainId": int(fields["chainId"]),
            "type": 2,
        }
        if fields.get("to"):
            tx["to"] = to_checksum_address(bytes(fields["to"]))
        if fields.get("data"):
            tx["data"] = "0x" + bytes(fields["data"]).hex()
        return cls(
            tx_hash="0x" + keccak(raw_bytes).hex(),
            nonce=tx["nonce"],
            sender=to_checksum_address(Account.recover_transaction(raw_bytes)),
            tx=tx,
            raw=raw_bytes,
        )

    @property
    def max_fee_per_gas(self) -> int:
        return int(self.tx["maxFeePerGas"])

    @property
    def max_priority_fee_per_gas(self) -> int:
        return int(self.tx["maxPriorityFeePerGas"])

    @property
    def gas(self) -> int:
        return int(self.tx["gas"])


@dataclass(frozen=True)
class TxLookup:
    tx_hash: str
    status: TxStatus
    nonce: int | None = None
    block_number: int | None = None
    gas_used: int | None = None
    confirmations: int = 0


class NonceStore(Protocol):
    """Persists the next nonce per key (chain id, genesis hash, address)."""

    def get(self, key: str) -> int | None: ...

    def set(self, key: str, next_nonce: int) -> None: ...


class MemoryNonceStore:
    def __init__(self) -> None:
        self._data: dict[str, int] = {}

    def get(self, key: str) -> int | None:
        return self._data.get(key)

    def set(self, key: str, next_nonce: int) -> None:
        self._data[key] = next_nonce


class FileNonceStore:
    """A JSON file {key: next_nonce}, replaced atomically on each write."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def _read(self) -> dict[str, int]:
        try:
            return {k: int(v) for k, v in json.loads(self.path.read_text()).items()}
        except FileNotFoundError:
            return {}

    def get(self, key: str) -> int | None:
        return self._read().get(key)

    def set(self, key: str, next_nonce: int) -> None:
        data = self._read()
        data[key] = next_nonce
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


OnPrepared = Callable[[PreparedTx], Awaitable[None] | None]
Outstanding = Callable[[int], Awaitable[Sequence[bytes | str]]]
"""``outstanding(from_nonce)``: the signed bytes the caller stored (persist-before-broadcast) of
its transactions with nonce >= from_nonce that may still be mined (not those another
same-nonce transaction finally replaced); for a nonce with several, the one to re-broadcast
last (the mined one, else the highest fee)."""


async def canonical_receipt(w3: AsyncWeb3, tx_hash: str) -> Any | None:
    """The receipt of ``tx_hash`` if it is in the chain's canonical block at its number now;
    None when it is not mined, or its block is not (or no longer) the chain's block at that
    height (a reorg took it away; a node behind a load balancer answered from an orphan)."""
    try:
        receipt = await w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
    except (TransactionNotFound, TimeExhausted):
        return None
    if receipt is None or receipt.get("blockNumber") is None:
        return None
    try:
        block = await w3.eth.get_block(int(receipt["blockNumber"]))
    except BlockNotFound:
        return None
    if _hex(block["hash"]).lower() != _hex(receipt["blockHash"]).lower():
        return None
    return receipt


async def block_time(w3: AsyncWeb3, sample: int = 20) -> float | None:
    """Seconds per block over the last ``sample`` blocks, from their timestamps; None when the
    chain is too short to tell."""
    head = await w3.eth.get_block("latest")
    number = int(head["number"])
    back = min(sample, number)
    if back <= 0:
        return None
    old = await w3.eth.get_block(number - back)
    return max(int(head["timestamp"]) - int(old["timestamp"]), 0) / back


def load_account(
    private_key: str | bytes | None = None,
    keystore: str | os.PathLike[str] | None = None,
    password: str | None = None,
) -> LocalAccount:
    """A local signing account from a private key or an encrypted keystore (never logged)."""
    if private_key and keystore:
        raise ConfigError("give either a private key or a keystore, not both")
    if private_key:
        try:
            return Account.from_key(private_key)
        except Exception:
            raise ConfigError("the treasury private key is not a valid secp256k1 key") from None
    if keystore:
        if password is None:
            raise ConfigError("a keystore needs a password")
        try:
            encrypted = json.loads(Path(keystore).read_text())
            return Account.from_key(Account.decrypt(encrypted, password))
        except FileNotFoundError:
            raise ConfigError(f"keystore file not found: {keystore}") from None
        except ValueError:
            raise ConfigError(f"cannot decrypt keystore {keystore} (wrong password?)") from None
    raise ConfigError("no signer: set a treasury private key or keystore")


def _hex(value: bytes | str) -> str:
    if isinstance(value, str):
        return value if value.startswith("0x") else "0x" + value
    return "0x" + bytes(value).hex()


class TxSender:
    """Signs and sends every transaction of one account.

    ``max_fee_wei`` caps maxFeePerGas (MAX_FEE_GWEI * 10**9); ``priority_fee_wei`` is the tip;
    ``gas_margin_bps`` is added to the estimate; ``replacement_bump_bps`` (>= 1000, what nodes
    require) is the fee increase of each replacement. ``broadcast_w3``, when given, is the only
    node signed bytes are sent to (a private relay: nothing reaches the public mempool);
    everything else (nonces, fees, receipts) is read through ``w3``. ``outstanding`` gives the
    caller's stored signed transactions that may still be mined (see ``Outstanding``): no new
    nonce is handed out at or below theirs, and one the node no longer holds is re-broadcast
    from its stored bytes first.
    """

    def __init__(
        self,
        w3: AsyncWeb3,
        account: LocalAccount,
        *,
        max_fee_wei: int,
        priority_fee_wei: int = 1 * GWEI,
        gas_margin_bps: int = 2_000,
        replacement_bump_bps: int = 1_250,
        nonce_store: NonceStore | None = None,
        poll_interval: float = 0.05,
        chain_id: int | None = None,
        broadcast_w3: AsyncWeb3 | None = None,
        outstanding: Outstanding | None = None,
    ) -> None:
        if max_fee_wei <= 0:
            raise ConfigError("max_fee_wei must be positive")
        if replacement_bump_bps < 1_000:
            raise ConfigError("replacement_bump_bps must be >= 1000 (nodes require +10%)")
        self.w3 = w3
        self.broadcast_w3 = broadcast_w3 or w3
        self._account = account
        self.address = to_checksum_address(account.address)
        self.max_fee_wei = int(max_fee_wei)
        self.priority_fee_wei = int(priority_fee_wei)
        self.gas_margin_bps = gas_margin_bps
        self.replacement_bump_bps = replacement_bump_bps
        self.nonce_store: NonceStore = nonce_store if nonce_store is not None else MemoryNonceStore()
        self.poll_interval = poll_interval
        self._chain_id = chain_id
        self._store_key: str | None = None
        self._next_nonce: int | None = None
        self._lock = asyncio.Lock()
        self.outstanding = outstanding

    def __repr__(self) -> str:
        return f"TxSender(address={self.address})"

    @classmethod
    def from_config(
        cls, w3: AsyncWeb3, config: ChainConfig, *, nonce_store: NonceStore | None = None, **kw: Any
    ) -> TxSender:
        account = load_account(
            config.treasury_private_key, config.treasury_keystore, config.treasury_keystore_password
        )
        return cls(
            w3, account, max_fee_wei=config.max_fee_wei, nonce_store=nonce_store,
            chain_id=config.chain_id, **kw,
        )

    async def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = await self.w3.eth.chain_id
        return self._chain_id

    async def _key(self) -> str:
        # The genesis hash tells apart two chains with one chain id (a restarted dev chain).
        if self._store_key is None:
            genesis = await self.w3.eth.get_block(0)
            self._store_key = f"{await self.chain_id()}:{_hex(genesis['hash'])}:{self.address}"
        return self._store_key

    # fees and gas

    async def fees(self) -> tuple[int, int]:
        """(maxFeePerGas, maxPriorityFeePerGas) in wei, never above the cap."""
        block = await self.w3.eth.get_block("latest")
        base = int(block.get("baseFeePerGas") or 0)
        if base >= self.max_fee_wei:
            raise FeeCapExceeded(
                f"base fee {base} wei is at or above the cap {self.max_fee_wei} wei"
            )
        priority = min(self.priority_fee_wei, self.max_fee_wei - base)
        return min(2 * base + priority, self.max_fee_wei), priority

    async def estimate_gas(self, tx: Mapping[str, Any]) -> int:
        """Estimated gas plus ``gas_margin_bps``. Reverts are mapped (e.g. SlippageExceeded)."""
        call = {k: v for k, v in tx.items() if k in ("to", "data", "value", "from")}
        call.setdefault("from", self.address)
        try:
            estimate = await self.w3.eth.estimate_gas(call)  # type: ignore[arg-type]
        except Exception as exc:
            raise map_exception(exc) from exc
        block = await self.w3.eth.get_block("latest")
        return min(estimate + estimate * self.gas_margin_bps // 10_000, int(block["gasLimit"]))

    # nonces

    async def _allocate_nonce(self) -> int:
        key = await self._key()
        floor = await self._outstanding_floor()
        pending = await self.w3.eth.get_transaction_count(self.address, "pending")
        stored = self.nonce_store.get(key) or 0
        return max(pending, stored, self._next_nonce or 0, floor)

    async def _outstanding_floor(self) -> int:
        """1 + the highest nonce among the caller's stored transactions that may still be
        mined (0 without any), after re-broadcasting, in nonce order, those the node does not
        hold: a reorg that dropped one of ours must not let a new transaction take its nonce
        (the stored one could then never be mined, and what it was to do would never happen)."""
        if self.outstanding is None:
            return 0
        mined = await self.w3.eth.get_transaction_count(self.address, "latest")
        ours: dict[int, PreparedTx] = {}
        for raw in await self.outstanding(mined):
            prepared = PreparedTx.from_raw(raw)
            if to_checksum_address(prepared.sender) == self.address and prepared.nonce >= mined:
                ours[prepared.nonce] = prepared  # the caller lists the one to send last
        if not ours:
            return 0
        pending = await self.w3.eth.get_transaction_count(self.address, "pending")
        for nonce in sorted(ours):
            if nonce < pending:
                continue  # the node holds a transaction with this nonce
            prepared = ours[nonce]
            found = await self.lookup(prepared.tx_hash)
            if found.status is TxStatus.UNKNOWN:
                log.warning("nonce %d: stored transaction %s is not on chain (dropped by a "
                            "reorg?); re-broadcasting its signed bytes", nonce, prepared.tx_hash)
                await self.broadcast_raw(prepared.raw, prepared.tx_hash)
        return max(ours) + 1

    def _commit_nonce(self, key: str, nonce: int) -> None:
        self._next_nonce = nonce + 1
        self.nonce_store.set(key, nonce + 1)

    async def release(self, prepared: PreparedTx) -> bool:
        """Give back the nonce of a prepared transaction that will never be broadcast.
        Only the most recent reservation can be released; returns whether it was."""
        async with self._lock:
            key = await self._key()
            if self._next_nonce != prepared.nonce + 1:
                return False
            if await self.nonce_state(prepared.nonce) is not NonceStatus.FREE:
                return False
            self._next_nonce = prepared.nonce
            self.nonce_store.set(key, prepared.nonce)
            return True

    # prepare / broadcast

    async def prepare(
        self,
        tx: Mapping[str, Any],
        *,
        nonce: int | None = None,
        gas: int | None = None,
        max_fee_per_gas: int | None = None,
        max_priority_fee_per_gas: int | None = None,
    ) -> PreparedTx:
        """Sign ``tx`` (to, data, value) without sending it. A revert during gas estimation is
        raised as a mapped ChainError and no nonce is consumed."""
        if "to" in tx and tx["to"] is not None:
            to = to_checksum_address(tx["to"])
        else:
            to = None
        base_tx: dict[str, Any] = {"from": self.address, "value": int(tx.get("value", 0))}
        if to is not None:
            base_tx["to"] = to
        if tx.get("data"):
            base_tx["data"] = _hex(tx["data"])
        if gas is None:
            gas = await self.estimate_gas(base_tx)
        if max_fee_per_gas is None or max_priority_fee_per_gas is None:
            max_fee_per_gas, max_priority_fee_per_gas = await self.fees()
        if max_fee_per_gas > self.max_fee_wei:
            raise FeeCapExceeded(f"maxFeePerGas {max_fee_per_gas} wei above cap {self.max_fee_wei}")
        cost = int(gas) * int(max_fee_per_gas) + base_tx["value"]
        balance = await self.w3.eth.get_balance(self.address)
        if balance < cost:
            raise InsufficientBalance(
                f"{self.address} has {balance} wei, the transaction may cost {cost} wei"
            )
        chain_id = await self.chain_id()
        async with self._lock:
            key = await self._key()
            replacing = nonce is not None
            if nonce is None:
                nonce = await self._allocate_nonce()
            unsigned = {
                **{k: v for k, v in base_tx.items() if k != "from"},
                "nonce": nonce,
                "gas": int(gas),
                "maxFeePerGas": int(max_fee_per_gas),
                "maxPriorityFeePerGas": int(max_priority_fee_per_gas),
                "chainId": chain_id,
                "type": 2,
            }
            signed = self._account.sign_transaction(unsigned)
            if not replacing:
                self._commit_nonce(key, nonce)
        prepared = PreparedTx(
            tx_hash=_hex(signed.hash),
            nonce=nonce,
            sender=self.address,
            tx=unsigned,
            raw=bytes(signed.raw_transaction),
        )
        log.info("prepared tx %s nonce=%d gas=%d to=%s", prepared.tx_hash, nonce, gas, to)
        return prepared

    async def broadcast(self, prepared: PreparedTx) -> str:
        """Send a prepared transaction. Idempotent: a hash the node already knows is fine."""
        return await self.broadcast_raw(prepared.raw, prepared.tx_hash)

    async def broadcast_raw(self, raw: bytes, tx_hash: str) -> str:
        try:
            sent = await self.broadcast_w3.eth.send_raw_transaction(raw)
        except Exception as exc:
            known = await self.lookup(tx_hash)
            if known.status is not TxStatus.UNKNOWN:
                return tx_hash
            raise map_exception(exc, tx_hash=tx_hash) from exc
        sent_hash = _hex(sent)
        if sent_hash.lower() != tx_hash.lower():
            raise ChainError(f"node returned hash {sent_hash}, expected {tx_hash}")
        log.info("broadcast tx %s", tx_hash)
        return tx_hash

    # receipts

    async def _receipt(self, tx_hash: str) -> Any | None:
        """The receipt on the canonical chain only (re-read at every confirmation check)."""
        return await canonical_receipt(self.w3, tx_hash)

    async def wait_for_receipt(
        self, tx_hash: str, confirmations: int = 1, timeout: float = 120.0
    ) -> Any:
        """The receipt once the tx has ``confirmations`` blocks (its own included).
        Raises TxTimeout after ``timeout`` seconds. Does not raise on a reverted receipt."""
        receipt = await self._wait_any([tx_hash], confirmations, timeout)
        if receipt is None:
            raise TxTimeout(f"no receipt for {tx_hash} after {timeout}s", (tx_hash,))
        return receipt

    async def _wait_any(
        self, hashes: list[str], confirmations: int, timeout: float
    ) -> Any | None:
        deadline = time.monotonic() + timeout
        while True:
            for h in hashes:
                receipt = await self._receipt(h)
                if receipt is not None and receipt.get("blockNumber") is not None:
                    head = await self.w3.eth.block_number
                    if head - receipt["blockNumber"] + 1 >= max(confirmations, 1):
                        return receipt
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(self.poll_interval)

    async def raise_for_status(self, receipt: Any, prepared: PreparedTx | None = None) -> None:
        """Raise the mapped TxReverted for a status-0 receipt (replaying the call for a reason)."""
        if receipt["status"] == 1:
            return
        tx_hash = _hex(receipt["transactionHash"])
        tx = await self.w3.eth.get_transaction(tx_hash)  # type: ignore[arg-type]
        call = {"from": tx["from"], "to": tx["to"], "data": _hex(tx["input"]),
                "value": tx["value"], "gas": tx["gas"]}
        mined_in = int(receipt["blockNumber"])
        # Replay on the state before the block first, then on the block itself: a trade earlier
        # in the same block (a front-run) or the block's own timestamp (an expired deadline) is
        # only visible in the latter.
        for block in dict.fromkeys((max(mined_in - 1, 0), mined_in)):
            try:
                await self.w3.eth.call(call, block_identifier=block)  # type: ignore[arg-type]
            except Exception as exc:
                err = map_exception(exc, tx_hash=tx_hash)
                if not isinstance(err, TxReverted):
                    # the replay failed in some other way; the mined tx still reverted
                    err = TxReverted(f"transaction reverted ({err})", tx_hash=tx_hash)
                err.tx_hash = tx_hash
                raise err from exc
        raise TxReverted(
            f"transaction reverted (gas used {receipt['gasUsed']} of {tx['gas']}; "
            "the replay did not revert: out of gas or state changed)",
            tx_hash=tx_hash,
        )

    def _check_ours(self, prepared: PreparedTx) -> None:
        # Re-signing another account's transaction with our key would not replace it: it would
        # be a second, independent transaction with the same effect.
        if to_checksum_address(prepared.sender) != self.address:
            raise ConfigError(
                f"transaction {prepared.tx_hash} was signed by {prepared.sender}, not by {self.address}"
            )

    async def replacement(self, prepared: PreparedTx) -> PreparedTx | None:
        """Re-sign ``prepared`` with the same nonce and fees raised by replacement_bump_bps.
        None when the cap leaves no room for a bump nodes would accept."""
        self._check_ours(prepared)
        bump = 10_000 + self.replacement_bump_bps
        tip = -(-prepared.max_priority_fee_per_gas * bump // 10_000)
        block = await self.w3.eth.get_block("latest")
        base = int(block.get("baseFeePerGas") or 0)
        max_fee = max(-(-prepared.max_fee_per_gas * bump // 10_000), 2 * base + tip)
        max_fee = min(max_fee, self.max_fee_wei)
        tip = min(tip, max_fee)
        if max_fee * 10 < prepared.max_fee_per_gas * 11 or tip * 10 < prepared.max_priority_fee_per_gas * 11:
            return None
        return await self.prepare(
            prepared.tx, nonce=prepared.nonce, gas=prepared.gas,
            max_fee_per_gas=max_fee, max_priority_fee_per_gas=tip,
        )

    async def wait_or_replace(
        self,
        prepared: PreparedTx,
        *,
        confirmations: int = 1,
        timeout: float = 120.0,
        max_replacements: int = 3,
        on_prepared: OnPrepared | None = None,
        raise_on_revert: bool = True,
    ) -> Any:
        """Wait for ``prepared`` (assumed broadcast); each time ``timeout`` seconds pass
        without a receipt, replace it with the same nonce and higher fees (``on_prepared`` is
        called with the replacement before it is broadcast). Returns the receipt of whichever
        transaction with this nonce was mined. TxTimeout (with every hash tried) when none has
        ``confirmations`` in time, also when one is mined but not yet confirmed enough;
        NonceError only when a transaction not in this list took the nonce."""
        self._check_ours(prepared)
        hashes = [prepared.tx_hash]
        current = last_signed = prepared
        attempts = 0
        while True:
            receipt = await self._wait_any(hashes, confirmations, timeout)
            if receipt is not None:
                if raise_on_revert:
                    await self.raise_for_status(receipt, current)
                return receipt
            if await self.nonce_state(prepared.nonce) is NonceStatus.MINED:
                # Mined by one of ours (maybe still short of confirmations, maybe after the
                # last poll), or by a transaction we don't know.
                mined = await self._wait_any(hashes, 1, self.poll_interval * 4 + 1)
                if mined is None:
                    raise NonceError(
                        f"nonce {prepared.nonce} was used by a transaction other than {hashes}"
                    )
                receipt = await self._wait_any(hashes, confirmations, 0)
                if receipt is not None:  # confirmed while we looked
                    if raise_on_revert:
                        await self.raise_for_status(receipt, current)
                    return receipt
                if attempts >= max_replacements:
                    raise TxTimeout(
                        f"nonce {prepared.nonce}: {_hex(mined['transactionHash'])} is mined but "
                        f"has fewer than {confirmations} confirmations after {attempts + 1} "
                        f"wait(s) of {timeout}s", tuple(hashes), prepared.nonce,
                    )
                attempts += 1
                continue  # nothing to replace: wait for the confirmations
            if attempts >= max_replacements:
                raise TxTimeout(
                    f"nonce {prepared.nonce}: no receipt after {attempts + 1} attempt(s) of "
                    f"{timeout}s", tuple(hashes), prepared.nonce,
                )
            attempts += 1
            try:
                # bump from the last one signed: if a node refused it as underpriced, signing
                # the same fees again would only be refused again
                nxt = await self.replacement(last_signed)
            except (InsufficientBalance, FeeCapExceeded) as exc:
                # the earlier attempts are still out there: keep waiting for them
                log.warning("nonce %d: cannot replace (%s), waiting without replacement",
                            prepared.nonce, exc)
                continue
            if nxt is None:
                log.warning("nonce %d: fee cap reached, waiting without replacement", prepared.nonce)
                continue
            if on_prepared is not None:
                await _maybe_await(on_prepared(nxt))
            hashes.append(nxt.tx_hash)
            last_signed = nxt
            try:
                await self.broadcast(nxt)
            except ChainError as exc:
                log.warning("replacement %s not accepted: %s", nxt.tx_hash, exc)
                continue
            log.info("nonce %d: replaced by %s", prepared.nonce, nxt.tx_hash)
            current = nxt

    async def send(
        self,
        tx: Mapping[str, Any],
        *,
        confirmations: int = 1,
        timeout: float = 120.0,
        max_replacements: int = 3,
        on_prepared: OnPrepared | None = None,
    ) -> Any:
        """prepare → on_prepared (persist!) → broadcast → wait_or_replace. Returns the
        receipt; a revert raises the mapped TxReverted subclass. When on_prepared or the
        broadcast fails, the nonce is released if the node holds nothing with it."""
        prepared = await self.prepare(tx)
        try:
            if on_prepared is not None:
                await _maybe_await(on_prepared(prepared))
            await self.broadcast(prepared)
        except Exception:
            # Not persisted, or not accepted by the node: give the nonce back (when it is the
            # latest reservation and the node holds nothing with it), or every later
            # transaction of this sender would wait behind a gap.
            try:
                released = await self.release(prepared)
            except Exception as exc:  # the node may be what failed; keep the first error
                log.warning("nonce %d: could not release after a failed send: %s", prepared.nonce, exc)
            else:
                if released:
                    log.info("nonce %d: released after a failed send", prepared.nonce)
            raise
        return await self.wait_or_replace(
            prepared, confirmations=confirmations, timeout=timeout,
            max_replacements=max_replacements, on_prepared=on_prepared,
        )

    async def send_tracked(
        self,
        tx: Mapping[str, Any],
        *,
        confirmations: int = 1,
        timeout: float = 120.0,
        on_prepared: OnPrepared | None = None,
    ) -> tuple[Any, PreparedTx]:
        """send(), also returning which attempt (the original or a replacement) was mined."""
        attempts: list[PreparedTx] = []

        async def remember(prepared: PreparedTx) -> None:
            attempts.append(prepared)
            if on_prepared is not None:
                await _maybe_await(on_prepared(prepared))

        receipt = await self.send(tx, confirmations=confirmations, timeout=timeout,
                                  on_prepared=remember)
        mined = _hex(receipt["transactionHash"]).lower()
        return receipt, next(p for p in attempts if p.tx_hash.lower() == mined)

    # after a crash

    async def lookup(self, tx_hash: str) -> TxLookup:
        receipt = await self._receipt(tx_hash)
        if receipt is not None and receipt.get("blockNumber") is not None:
            head = await self.w3.eth.block_number
            try:
                tx = await self.w3.eth.get_transaction(tx_hash)  # type: ignore[arg-type]
                nonce = int(tx["nonce"])
            except TransactionNotFound:
                nonce = None
            return TxLookup(
                tx_hash=tx_hash,
                status=TxStatus.SUCCESS if receipt["status"] == 1 else TxStatus.REVERTED,
                nonce=nonce,
                block_number=int(receipt["blockNumber"]),
                gas_used=int(receipt["gasUsed"]),
                confirmations=head - int(receipt["blockNumber"]) + 1,
            )
        try:
            tx = await self.w3.eth.get_transaction(tx_hash)  # type: ignore[arg-type]
        except (TransactionNotFound, TimeExhausted):
            return TxLookup(tx_hash=tx_hash, status=TxStatus.UNKNOWN)
        return TxLookup(tx_hash=tx_hash, status=TxStatus.PENDING, nonce=int(tx["nonce"]))

    async def nonce_state(self, nonce: int) -> NonceStatus:
        mined = await self.w3.eth.get_transaction_count(self.address, "latest")
        if nonce < mined:
            return NonceStatus.MINED
        pending = await self.w3.eth.get_transaction_count(self.address, "pending")
        if nonce < pending:
            return NonceStatus.PENDING
        return NonceStatus.FREE


async def _maybe_await(value: Awaitable[None] | None) -> None:
    if inspect.isawaitable(value):
        await value
