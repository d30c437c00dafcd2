"""Drive one buyback to the end: planned -> swapping -> swapped -> burning -> burned | failed.

A state machine over app/treasury/repository.py (every write is a conditional update there).

Resumable: every signed transaction is committed as a BuybackTx row (hash, nonce, raw bytes)
BEFORE it is broadcast, and each run first resolves the rows whose outcome is not recorded yet
by asking the chain (receipt by hash; else whether the nonce was used), re-broadcasting the
stored bytes when the nonce is still free. A stored transaction can only ever be mined once, and
new work is planned only from recorded outcomes, so a crash at any point never leads to a
second swap of the same stablecoin or a second burn.

Finality: an outcome counts once its block is CONFIRMATIONS deep on the canonical chain. Every
run, every confirmation check, and once more right before "burned", re-reads the receipt of
every recorded outcome of the buyback (however deep its block number looks: a reorg can replace
a chain with a longer one while the worker sleeps) and checks its block hash against the
chain's block at that number; one a reorg took away goes back to "prepared", and the resolve
step re-broadcasts its same signed bytes (or finds its nonce used by something else and stops:
BuybackStuck). The swaps must be final before the burn is sized, and a buyback is burned only
once its burn is final. Waits for depth are sized from the chain's observed block time.

Failures:
- definitive (slippage, deadline, price impact, empty treasury, wrong contract, a revert)
  BEFORE any swap was mined: the buyback fails with the reason and its revenue becomes
  unallocated again, in one transaction. A mined revert counts, like any outcome, only once it
  is CONFIRMATIONS deep (a reorg may yet mine the same bytes successfully).
- definitive AFTER some swap chunks were mined: what was bought is burned; usd_swapped says
  what the mined swaps spent, and the rest of the claimed revenue goes back to unallocated as
  one carry-over ledger entry when the buyback is burned; failure_reason starts with
  "partial:".
- transient (RPC down, receipt timeout, fee cap, nonce trouble): raised; the worker retries
  later and the next run resumes from the records.
- waits (Wait: the chunk interval, a spot price off its TWAP, depth not reached, an operator
  pause): the run ends without sending; the worker runs it again later.
- the chain contradicts the records (our nonce used by a transaction we never stored):
  BuybackStuck is raised and nothing more is sent; an operator must look (and may cancel).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from decimal import ROUND_FLOOR, Decimal
from typing import Any

from eth_utils import to_checksum_address

from app.context import AppContext
from app.models import (ACTIVE_BUYBACK_STATUSES, Buyback, BuybackStatus, BuybackTx,
                        utcnow)
from app.treasury import price
from app.treasury import repository as repo
from app.treasury.onchain import Treasury, get_treasury
from app.treasury.verify import usd_of
from chain.burn import burn
from chain.dex import ensure_allowance, plan_chunks, swap
from chain.errors import (ConfigError, ContractNotFound, InsufficientBalance, PriceImpactTooHigh,
                          TxReverted)
from chain.tokens import erc20, received, transfers
from chain.tx import NonceStatus, PreparedTx, TxSender, TxStatus, block_time, canonical_receipt

log = logging.getLogger(__name__)

Checkpoint = Callable[[str], Awaitable[None]]
DEFINITIVE = (TxReverted, InsufficientBalance, PriceImpactTooHigh, ContractNotFound, ConfigError)
MAX_BURN_REVERTS = 3
# A wait for missing confirmations is (missing blocks) x (the chain's block time, observed from
# the timestamps of its last BLOCK_TIME_SAMPLE blocks and bounded to BLOCK_TIME_BOUNDS_S), itself
# bounded to DEPTH_WAIT_BOUNDS_S; DEFAULT_BLOCK_TIME_S when the chain cannot tell.
BLOCK_TIME_SAMPLE = 20
BLOCK_TIME_BOUNDS_S = (0.25, 60.0)
DEFAULT_BLOCK_TIME_S = 12.0
DEPTH_WAIT_BOUNDS_S = (0.5, 300.0)
MAX_REORGS_PER_RUN = 5  # a chain (or a node behind a load balancer) that keeps changing: wait
_random = secrets.SystemRandom()  # chunk waits an observer cannot predict from our code


class BuybackStuck(Exception):
    """The chain contradicts the buyback's records; nothing more is sent until someone looks."""


class ConcurrentRunner(Exception):
    """Another runner is driving this buyback (its transaction is in flight): transient; this
    run sends nothing and a later one resumes from the records."""


class _Reorged(Exception):
    """A confirmation check found recorded outcomes gone or changed: the run re-broadcasts
    what was dropped and starts its loop over from the records."""


class Wait(Exception):
    """Not a failure: nothing is sent now and the caller runs the buyback again after
    ``seconds``; the next run resumes from the records (and quotes at the pool's price then).
    ``reason`` says why: chunk_interval, price_deviation, twap_warmup, confirmations, paused."""

    def __init__(self, buyback_id: int, seconds: float, reason: str = "chunk_interval") -> None:
        super().__init__(f"buyback {buyback_id}: {reason}, next step in {seconds:.1f}s")
        self.buyback_id = buyback_id
        self.seconds = seconds
        self.reason = reason



async def run_buyback(ctx: AppContext, buyback_id: int, *, treasury: Treasury | None = None,
                      checkpoint: Checkpoint | None = None) -> str:
    """Run (or resume) a buyback until it is burned or failed; returns the final status.

    ``checkpoint(name)`` is awaited at named points (tests crash there): "<kind>:prepared"
    (row committed, not yet broadcast; kind = approve | swap | burn), "swap:sent" (swap mined,
    result not recorded), "swapped" (before the burn starts), "burn:sent" (burn mined, not
    recorded), "burn:deep" (the burn reached CONFIRMATIONS, not yet marked burned).
    """
    t = treasury or await get_treasury(ctx, signer=True)
    async with t.lock:
        started = time.perf_counter()
        status = await _Run(ctx, t, buyback_id, checkpoint).run()
        log.info("buyback %d: %s after %.2fs in this run", buyback_id, status,
                 time.perf_counter() - started)
        return status


class _Run:
    def __init__(self, ctx: AppContext, t: Treasury, buyback_id: int,
                 checkpoint: Checkpoint | None) -> None:
        self.ctx = ctx
        self.db = ctx.db
        self.t = t
        self.id = buyback_id
        self.checkpoint = checkpoint
        self.sender: TxSender = t.new_sender(outstanding=self._outstanding)
        self.s = ctx.settings
        self._quote_amount_in: int | None = None

    async def _cp(self, name: str) -> None:
        if self.checkpoint is not None:
            await self.checkpoint(name)

    async def run(self) -> str:
        bb = await self._load()
        if bb.status not in ACTIVE_BUYBACK_STATUSES:
            return bb.status
        await self._recheck()
        await self._resolve_stored()
        reorgs = 0
        while True:
            bb = await self._load()
            try:
                if bb.status in ACTIVE_BUYBACK_STATUSES:
                    await self._operator_pause()
                if bb.status == BuybackStatus.planned:
                    await self._plan(bb)
                elif bb.status == BuybackStatus.swapping:
                    await self._swap_step(bb)
                elif bb.status == BuybackStatus.swapped:
                    await self._cp("swapped")
                    await self._swaps_final()
                    await self._set_status(bb, BuybackStatus.swapped, status=BuybackStatus.burning)
                elif bb.status == BuybackStatus.burning:
                    await self._burn_step(bb)
                else:
                    return bb.status
            except _Reorged:
                reorgs += 1
                if reorgs > MAX_REORGS_PER_RUN:
                    raise Wait(self.id, await self._depth_wait_s(1),
                               "reorg: the chain keeps changing under this run") from None
                await self._resolve_stored()  # re-broadcast what the reorg dropped, in order

    # --- records ----------------------------------------------------------------------------

    async def _load(self) -> Buyback:
        async with self.db.transaction() as session:
            bb = await repo.get_buyback(session, self.id)
        self._quote_amount_in = None if bb.quote_amount_in is None else int(bb.quote_amount_in)
        return bb

    async def _txs(self) -> list[BuybackTx]:
        async with self.db.transaction() as session:
            return (await repo.txs_of(session, [self.id]))[self.id]

    async def _set_status(self, bb: Buyback, expected: str, **values: Any) -> None:
        try:
            async with self.db.transaction() as session:
                await repo.advance(session, bb.id, expected, **values)
        except repo.StateChanged as exc:
            raise BuybackStuck(str(exc)) from None

    async def _event(self, kind: str, detail: str) -> None:
        async with self.db.transaction() as session:
            await repo.add_event(session, self.id, kind, detail)
        log.info("buyback %d: %s: %s", self.id, kind, detail)

    async def _outstanding(self, from_nonce: int) -> list[str]:
        """chain.tx.Outstanding for this run's sender: every stored signed transaction that may
        still be mined, so no new nonce is ever handed out at or below one of them."""
        async with self.db.sessions() as session:
            return await repo.outstanding_signed(session, from_nonce)

    async def _persist(self, prepared: PreparedTx) -> None:
        """on_prepared for every transaction (replacements too): commit the row, THEN the
        toolkit broadcasts."""
        kind, amount_in, amount_out_min = self._describe(prepared)
        async with self.db.transaction() as session:
            await repo.lock_buyback(session, self.id)
            bb = await repo.get_buyback(session, self.id)
            await session.refresh(bb)
            if bb.status not in ACTIVE_BUYBACK_STATUSES:  # an operator cancelled it meanwhile
                raise ConcurrentRunner(f"buyback {self.id} is {bb.status}; sending nothing")
            rows = (await repo.txs_of(session, [self.id]))[self.id]
            self._refuse_second_runner(rows, kind, prepared.nonce, amount_in or 0)
            await repo.add_tx(session, self.id, kind=kind, tx_hash=prepared.tx_hash.lower(),
                              nonce=prepared.nonce, raw_tx="0x" + prepared.raw.hex(),
                              amount_in=amount_in, amount_out_min=amount_out_min)
        await self._cp(f"{kind}:prepared")

    def _refuse_second_runner(self, rows: list[BuybackTx], kind: str, nonce: int,
                              amount_in: int) -> None:
        """Before a swap or burn is committed (and so before it can be broadcast): with the
        swaps other nonces already carry (mined, or in flight), it must not spend more than
        quote_amount_in, and there is never a second burn in flight or mined. A replacement
        (same nonce) is an alternative to its original, not an addition. This holds even when
        two runners race (a lost Redis lock, two processes): the loser sends nothing."""
        if kind not in ("swap", "burn"):
            return
        by_nonce: dict[int, list[BuybackTx]] = {}
        for r in rows:
            if r.kind == kind and r.nonce != nonce and r.status in ("prepared", "mined"):
                by_nonce.setdefault(r.nonce, []).append(r)
        if kind == "burn":
            if by_nonce:
                raise ConcurrentRunner(f"buyback {self.id}: a burn is already in flight or mined "
                                       f"(nonces {sorted(by_nonce)}); not sending another")
            return
        committed = 0
        for group in by_nonce.values():
            mined = [r for r in group if r.status == "mined"]
            committed += sum(int(r.amount_in or 0) for r in mined) if mined else max(
                int(r.amount_in or 0) for r in group)
        total = self._quote_amount_in
        if total is None or committed + amount_in > total:
            raise ConcurrentRunner(
                f"buyback {self.id}: a swap of {amount_in} would bring the swaps to "
                f"{committed + amount_in} > {total} base units (another runner is swapping)")

    def _describe(self, prepared: PreparedTx) -> tuple[str, int | None, int | None]:
        to = to_checksum_address(prepared.tx.get("to") or "0x" + "00" * 20)
        data = prepared.tx.get("data") or "0x"
        if to == self.t.router.address:
            _, args = self.t.router.contract.decode_function_input(data)
            return "swap", int(args["amountIn"]), int(args["amountOutMin"])
        if to == self.t.quote:
            fn, args = erc20(self.t.w3, to).decode_function_input(data)
            return "approve", int(args.get("value", args.get("amount", 0))), None
        if to == self.t.serv:
            fn, args = erc20(self.t.w3, to).decode_function_input(data)
            return "burn", int(args.get("value", args.get("amount", 0))), None
        raise BuybackStuck(f"refusing to record an unexpected transaction to {to}")

    async def _record_outcome(self, row: BuybackTx, receipt: Any) -> str:
        """Record what the chain says about ``row`` (mined or reverted, from its receipt);
        other rows with its nonce are superseded. Returns the row's new status."""
        ok = receipt["status"] == 1
        amount_out = None
        if ok and row.kind == "swap":
            amount_out = received(receipt, self.t.serv, self.t.address)
        elif ok and row.kind == "burn":
            amount_out = sum(x.amount for x in transfers(receipt)
                             if x.token == self.t.serv and x.from_address == self.t.address
                             and x.to_address == self.t.burn_address)
        status = "mined" if ok else "reverted"
        block = int(receipt["blockNumber"])
        block_hash = _hex(receipt["blockHash"])
        async with self.db.transaction() as session:
            await repo.record_outcome(session, row, status, amount_out, block,
                                      int(receipt["gasUsed"]), block_hash)
        row.status, row.amount_out, row.block_number = status, amount_out, block
        row.block_hash = block_hash
        return status

    async def _record_by_hash(self, tx_hash: str) -> BuybackTx:
        async with self.db.transaction() as session:
            row = await repo.tx_by_hash(session, tx_hash)
        receipt = await self.t.w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
        await self._record_outcome(row, receipt)
        return row

    # --- finality ---------------------------------------------------------------------------

    @property
    def _depth(self) -> int:
        return max(int(self.s.confirmations), 1)

    async def _recheck(self) -> bool:
        """Re-read the receipt of every recorded outcome of this buyback, on the canonical chain
        (its block hash is the chain's block at that number). None is final while the buyback
        is active, however deep its block number looks: a reorg may have replaced the chain
        with a longer one since we last looked. Gone: the row is in flight again (resolve
        re-broadcasts its stored bytes). In another block, or with another status: recorded
        again. Returns whether anything changed."""
        swaps_changed = changed = False
        for row in await self._txs():
            if row.status not in ("mined", "reverted") or row.block_number is None:
                continue
            receipt = await canonical_receipt(self.t.w3, row.tx_hash)
            if receipt is not None:
                ok = receipt["status"] == 1
                if (int(receipt["blockNumber"]) == row.block_number and ok == (row.status == "mined")
                        and row.block_hash in (None, _hex(receipt["blockHash"]))):
                    continue
                was = row.block_number
                await self._record_outcome(row, receipt)
                await self._event("reorg", f"{row.kind} {row.tx_hash} moved from block {was} "
                                           f"to block {row.block_number} ({row.status})")
            else:
                async with self.db.transaction() as session:
                    await repo.unmine(session, row)
                await self._event("reorg", f"{row.kind} {row.tx_hash} (nonce {row.nonce}) is no "
                                           f"longer in block {row.block_number}; in flight again")
            changed = True
            swaps_changed |= row.kind == "swap"
        if swaps_changed:
            await self._rewind()
        return changed

    async def _confirm(self, what: str, pick: Callable[[BuybackTx], bool]) -> None:
        """A confirmation check: every recorded receipt re-read first (_Reorged if any changed),
        then the rows ``pick`` chooses must be CONFIRMATIONS deep, else Wait about as long as
        the missing blocks take at the chain's observed block time."""
        if await self._recheck():
            raise _Reorged
        rows = [r for r in await self._txs() if pick(r)]
        head = await self.t.w3.eth.block_number
        missing = max((self._depth - (head - int(r.block_number or head) + 1) for r in rows),
                      default=0)
        if missing > 0:
            raise Wait(self.id, await self._depth_wait_s(missing),
                       f"confirmations: {what} needs {missing} more block(s)")

    async def _depth_wait_s(self, blocks: int) -> float:
        """How long ``blocks`` more blocks take: the chain's block time from the timestamps of
        its recent blocks (bounded), never a fixed guess."""
        try:
            observed = await block_time(self.t.w3, BLOCK_TIME_SAMPLE)
        except Exception as exc:  # the chain will be asked again at the next run
            log.warning("buyback %d: block time unknown (%s)", self.id, type(exc).__name__)
            observed = None
        low, high = BLOCK_TIME_BOUNDS_S
        per_block = DEFAULT_BLOCK_TIME_S if observed is None else min(max(observed, low), high)
        low, high = DEPTH_WAIT_BOUNDS_S
        return min(max(blocks * per_block, low), high)

    async def _rewind(self) -> None:
        """After a reorg changed a swap's outcome (gone, or mined where it had reverted), a
        buyback that had moved on but has no burn yet goes back to swapping, so what it
        received and swapped is counted again (a burn already signed is resolved by the same
        rules as the swaps: its bytes are re-broadcast after theirs, in nonce order)."""
        bb = await self._load()
        rows = await self._txs()
        burn_signed = any(r.kind == "burn" and r.status in ("prepared", "mined") for r in rows)
        if not burn_signed and bb.status in (BuybackStatus.swapped, BuybackStatus.burning):
            await self._set_status(bb, bb.status, status=BuybackStatus.swapping)

    # --- resume -------------------------------------------------------------------------------

    async def _resolve_stored(self) -> None:
        """Settle every row whose outcome is not recorded, oldest nonce first, BEFORE any new
        nonce is taken (a re-broadcast closes the gap a crash before broadcast left)."""
        rows = [r for r in await self._txs() if r.status == "prepared"]
        by_nonce: dict[int, list[BuybackTx]] = {}
        for r in rows:
            by_nonce.setdefault(r.nonce, []).append(r)
        for nonce in sorted(by_nonce):
            await self._resolve_nonce(nonce, by_nonce[nonce])

    async def _resolve_nonce(self, nonce: int, rows: list[BuybackTx]) -> None:
        pending: list[BuybackTx] = []
        for row in rows:
            found = await self.sender.lookup(row.tx_hash)
            if found.status in (TxStatus.SUCCESS, TxStatus.REVERTED):
                receipt = await self.t.w3.eth.get_transaction_receipt(row.tx_hash)  # type: ignore[arg-type]
                status = await self._record_outcome(row, receipt)
                log.info("buyback %d: stored %s %s was %s", self.id, row.kind, row.tx_hash, status)
                return  # a revert is acted on by the step it belongs to (see _revert_final)
            if found.status is TxStatus.PENDING:
                pending.append(row)
        if not pending:
            state = await self.sender.nonce_state(nonce)
            if state is not NonceStatus.FREE:
                raise BuybackStuck(
                    f"buyback {self.id}: nonce {nonce} is {state.value} on chain, but by none of "
                    f"the stored transactions {[r.tx_hash for r in rows]}")
            latest = rows[-1]  # the highest-fee replacement we stored last
            log.info("buyback %d: re-broadcasting stored %s %s (nonce %d)", self.id, latest.kind,
                     latest.tx_hash, nonce)
            await self.sender.broadcast_raw(bytes.fromhex(latest.raw_tx[2:]), latest.tx_hash)
            pending = [latest]
        prepared = PreparedTx.from_raw(pending[-1].raw_tx)
        receipt = await self.sender.wait_or_replace(
            prepared, confirmations=1, timeout=self.s.tx_timeout_s,
            on_prepared=self._persist, raise_on_revert=False)
        mined_hash = "0x" + bytes(receipt["transactionHash"]).hex()
        await self._record_by_hash(mined_hash)

    async def _revert_final(self, bb: Buyback, row: BuybackTx) -> None:
        """A reverted approve or swap fails the buyback (or makes it partial), once the revert
        is final: a reorg may yet mine the same signed bytes successfully, and a buyback failed
        at depth 1 would have released revenue the swap then spends."""
        await self._confirm(f"the reverted {row.kind}", lambda r: r.id == row.id)
        reason = f"{row.kind} transaction {row.tx_hash} reverted"
        try:
            receipt = await self.t.w3.eth.get_transaction_receipt(row.tx_hash)  # type: ignore[arg-type]
            await self.sender.raise_for_status(receipt)
        except TxReverted as exc:
            reason = f"{type(exc).__name__}: {exc} ({row.kind} {row.tx_hash})"
        await self._swap_failed(bb, reason)

    # --- steps --------------------------------------------------------------------------------

    async def _operator_pause(self) -> None:
        async with self.db.sessions() as session:
            c = await repo.control(session)
        if c.paused:
            raise Wait(self.id, float(self.s.buyback_pause_recheck_s),
                       f"paused by an operator ({c.changed_by}): {c.reason or 'no reason given'}")

    async def _plan(self, bb: Buyback) -> None:
        decimals = await self.t.decimals(self.t.quote)
        amount = int((Decimal(bb.usd_amount) * 10**decimals).to_integral_value(ROUND_FLOOR))
        if amount <= 0:
            await self._fail(bb, BuybackStatus.planned,
                             f"{bb.usd_amount} USD is less than one base unit of the stablecoin")
            return
        held = await self.t.balance(self.t.quote, self.t.address)
        if held < amount:  # an empty treasury: fail now rather than buy back part of it
            await self._fail(bb, BuybackStatus.planned,
                             f"InsufficientBalance: the treasury {self.t.address} holds {held} "
                             f"base units of the stablecoin, this buyback needs {amount}")
            return
        await self._set_status(bb, BuybackStatus.planned, status=BuybackStatus.swapping,
                               quote_amount_in=amount)

    async def _swap_step(self, bb: Buyback) -> None:
        rows = await self._txs()
        reverted = [r for r in rows if r.kind in ("approve", "swap") and r.status == "reverted"]
        if reverted:  # swapping ends here, once the revert is final
            await self._revert_final(bb, reverted[-1])
            return
        swaps = [r for r in rows if r.kind == "swap" and r.status == "mined"]
        spent = sum(r.amount_in or 0 for r in swaps)
        total = int(bb.quote_amount_in or 0)
        remaining = total - spent
        if remaining <= 0:
            await self._swaps_done(bb, swaps, note=None)
            return
        self._pause_between_chunks(swaps)
        t, s = self.t, self.s
        try:
            reserves = await t.router.reserves(t.path)
            chunk = plan_chunks(remaining, reserves, s.max_price_impact_bps)[0]
            cap = await self._twap_gate(chunk, reserves[0][0])  # before anything is sent
            approved = await ensure_allowance(self.sender, t.quote, t.router.address, remaining,
                                              confirmations=1, timeout=s.tx_timeout_s,
                                              on_prepared=self._persist)
            if approved is not None:
                await self._record_by_hash("0x" + bytes(approved["transactionHash"]).hex())
            result = await swap(self.sender, t.router, chunk, t.path, to=t.address,
                                max_slippage_bps=s.max_slippage_bps,
                                max_price_impact_bps=s.max_price_impact_bps,
                                deadline_seconds=s.swap_deadline_s, confirmations=1,
                                timeout=s.tx_timeout_s, on_prepared=self._persist,
                                expected_out_cap=cap)
        except DEFINITIVE as exc:
            tx_hash = getattr(exc, "tx_hash", None)
            if tx_hash and (await self._record_by_hash(tx_hash)).status == "reverted":
                return  # mined and reverted: the next swap step acts on it once it is final
            await self._swap_failed(bb, f"{type(exc).__name__}: {exc}")
            return
        await self._cp("swap:sent")
        await self._record_by_hash(result.tx_hash)

    async def _twap_gate(self, chunk: int, reserve_in: int) -> int | None:
        """None when the TWAP check is off; else the cap on what ``chunk`` should buy (for
        amountOutMin). A spot price off its TWAP, or no price history yet, is a Wait, with
        an event saying why."""
        verdict = await price.check(self.ctx, self.t, chunk, reserve_in)
        if verdict.wait_reason is not None:
            await self._event(verdict.wait_reason, verdict.detail)
            raise Wait(self.id, verdict.wait_s, verdict.wait_reason)
        return verdict.cap

    def _pause_between_chunks(self, mined_swaps: list[BuybackTx]) -> None:
        """Chunking only lowers the total price impact if arbitrage restores the price between
        chunks: the next chunk waits a draw from [BUYBACK_CHUNK_INTERVAL_S,
        BUYBACK_CHUNK_INTERVAL_MAX_S] after the last mined one, drawn afresh at each look so
        the time of the next chunk cannot be predicted. Checked from the records, so an early
        re-run (a cron re-enqueue, a retry) waits too."""
        low = float(self.s.buyback_chunk_interval_s)
        high = self.s.buyback_chunk_interval_max_s
        interval = low if high is None else _random.uniform(low, float(high))
        if interval <= 0 or not mined_swaps:
            return
        last = max(r.mined_at or r.created_at for r in mined_swaps)
        wait = interval - (utcnow() - last).total_seconds()
        if wait > 0:
            raise Wait(self.id, wait, "chunk_interval")

    async def _swaps_final(self) -> None:
        """The burn is sized from the swaps' output: they must be CONFIRMATIONS deep first."""
        await self._confirm("the swaps", lambda r: r.kind == "swap" and r.status == "mined")

    async def _swaps_done(self, bb: Buyback, swaps: list[BuybackTx], note: str | None) -> None:
        """Swapping ends: record what the mined swaps received and what they spent
        (usd_swapped, from their recorded inputs, which verify checks against the chain)."""
        spent = sum(int(r.amount_in or 0) for r in swaps)
        usd_swapped = min(usd_of(spent, await self.t.decimals(self.t.quote)),
                          Decimal(bb.usd_amount))
        values: dict[str, Any] = dict(
            status=BuybackStatus.swapped, serv_received=sum(r.amount_out or 0 for r in swaps),
            amount_out_min_total=sum(r.amount_out_min or 0 for r in swaps),
            quote_unspent=int(bb.quote_amount_in or 0) - spent, usd_swapped=usd_swapped)
        if note is not None:
            values["failure_reason"] = note[:1000]
        await self._set_status(bb, BuybackStatus.swapping, **values)

    async def _swap_failed(self, bb: Buyback, reason: str) -> None:
        swaps = [r for r in await self._txs() if r.kind == "swap" and r.status == "mined"]
        if not swaps:
            log.warning("buyback %d failed before any swap: %s", bb.id, reason)
            await self._fail(bb, BuybackStatus.swapping, reason)
            return
        spent = sum(r.amount_in or 0 for r in swaps)
        unspent = int(bb.quote_amount_in or 0) - spent
        note = (f"partial: swaps stopped after {len(swaps)} chunk(s) ({reason}); {unspent} base "
                "units of the stablecoin were not swapped; their revenue goes back to "
                "unallocated when this buyback is burned")
        log.warning("buyback %d: %s", bb.id, note)
        await self._swaps_done(bb, swaps, note=note)

    async def _fail(self, bb: Buyback, expected: str, reason: str) -> None:
        """Failed, no longer active, and its revenue unallocated again: one transaction."""
        try:
            async with self.db.transaction() as session:
                released = await repo.fail_and_release(session, bb.id, expected, reason)
        except repo.StateChanged as exc:
            raise BuybackStuck(str(exc)) from None
        log.info("buyback %d failed (%s); %d revenue event(s) unallocated again", bb.id, reason,
                 released)

    async def _burn_step(self, bb: Buyback) -> None:
        burns = [r for r in await self._txs() if r.kind == "burn"]
        mined = [r for r in burns if r.status == "mined"]
        if mined:
            await self._finish(bb, mined[0])
            return
        if any(r.status == "prepared" for r in burns):
            raise ConcurrentRunner(f"buyback {self.id}: a burn is in flight")
        if sum(r.status == "reverted" for r in burns) >= MAX_BURN_REVERTS:
            raise BuybackStuck(f"buyback {bb.id}: {MAX_BURN_REVERTS} burn transactions reverted")
        amount = int(bb.serv_received or 0)
        if amount <= 0:
            raise BuybackStuck(f"buyback {bb.id}: nothing to burn (serv_received={amount})")
        s = self.s
        try:
            result = await burn(self.sender, self.t.serv, amount, burn_address=self.t.burn_address,
                                confirmations=1, timeout=s.tx_timeout_s,
                                on_prepared=self._persist)
        except TxReverted as exc:
            if exc.tx_hash:
                await self._record_by_hash(exc.tx_hash)
            log.warning("buyback %d: burn reverted: %s", bb.id, exc)
            return
        except InsufficientBalance as exc:
            raise BuybackStuck(f"buyback {bb.id}: the treasury cannot burn what it bought: {exc}") from exc
        await self._cp("burn:sent")
        row = await self._record_by_hash(result.tx_hash)
        await self._finish(bb, row)

    async def _finish(self, bb: Buyback, burn_row: BuybackTx) -> None:
        """Burned once the burn is CONFIRMATIONS deep; in the same transaction, what the
        buyback claimed but did not swap goes back to unallocated (one carry-over entry)."""
        await self._confirm("the burn", lambda r: r.kind == "burn" and r.status == "mined")
        await self._cp("burn:deep")
        # Once more right before "burned": a reorg between the depth check and now must not
        # leave a burn recorded that the chain does not have.
        if await self._recheck():
            raise _Reorged
        try:
            async with self.db.transaction() as session:
                await repo.advance(session, bb.id, BuybackStatus.burning,
                                   status=BuybackStatus.burned,
                                   serv_burned=int(burn_row.amount_out or 0), active_slot=None,
                                   completed_at=utcnow())
                back = await repo.carry_over(session, bb, Decimal(bb.usd_swapped or 0))
                if back > 0:
                    await repo.add_event(session, bb.id, "carry_over",
                                         f"{back} USD not swapped went back to unallocated")
        except repo.StateChanged as exc:
            raise BuybackStuck(str(exc)) from None
        log.info("buyback %d burned %s $SERV base units in %s", bb.id, burn_row.amount_out,
                 burn_row.tx_hash)


def _hex(value: bytes | str) -> str:
    if isinstance(value, str):
        return (value if value.startswith("0x") else "0x" + value).lower()
    return "0x" + bytes(value).hex()
