"""Cancelling a stuck buyback, only when the chain proves none of its transactions can still
be mined; its revenue is released in the same transaction."""

from __future__ import annotations

from app.context import AppContext
from app.errors import Conflict
from app.models import ACTIVE_BUYBACK_STATUSES, Buyback, BuybackStatus
from app.treasury import repository as repo
from app.treasury.onchain import get_treasury


class NotCancellable(Conflict):
    code = "buyback_not_cancellable"


async def cancel(ctx: AppContext, buyback_id: int, by: str) -> tuple[Buyback, int]:
    """Cancel an active buyback that cannot go on, releasing its revenue, ONLY when the chain
    proves no transaction of it can still be mined: no swap was mined (what was bought must be
    burned, not released), and every transaction without a final outcome has its nonce used,
    CONFIRMATIONS deep, by something else. Raises NotCancellable (409) otherwise. Returns the
    buyback and how many revenue events were released."""
    t = await get_treasury(ctx)
    async with ctx.db.sessions() as session:
        bb = await repo.get_buyback(session, buyback_id)
        rows = (await repo.txs_of(session, [buyback_id]))[buyback_id]
    if bb.status not in ACTIVE_BUYBACK_STATUSES:
        raise NotCancellable(f"buyback {buyback_id} is {bb.status}, not active")
    if any(r.kind == "swap" and r.status == "mined" for r in rows):
        raise NotCancellable(f"buyback {buyback_id} has mined swaps: the $SERV they bought "
                             "must be burned (resume it), not its revenue released")
    depth = max(int(ctx.settings.confirmations), 1)
    head = await t.w3.eth.block_number
    final_block = max(head - depth + 1, 0)
    used = await t.w3.eth.get_transaction_count(t.address, final_block)  # type: ignore[arg-type]
    for r in rows:  # a revert is an outcome like any: a reorg may yet mine the same bytes
        if r.status == "reverted" and (r.block_number is None or r.block_number > final_block):
            raise NotCancellable(
                f"buyback {buyback_id}: {r.kind} {r.tx_hash} reverted in block {r.block_number}, "
                f"not yet {depth} block(s) deep: a reorg could still mine it")
    open_rows = [r for r in rows if r.status == "prepared"]
    for r in open_rows:
        try:
            receipt = await t.w3.eth.get_transaction_receipt(r.tx_hash)  # type: ignore[arg-type]
        except Exception:  # not mined (web3 raises TransactionNotFound)
            receipt = None
        if receipt is not None or r.nonce >= used:
            raise NotCancellable(
                f"buyback {buyback_id}: {r.kind} {r.tx_hash} (nonce {r.nonce}) can still be "
                f"mined: its nonce is not used {depth} block(s) deep (account nonce {used} at "
                f"block {final_block})")
    async with ctx.db.transaction() as session:
        await repo.lock_buyback(session, buyback_id)
        now_rows = (await repo.txs_of(session, [buyback_id]))[buyback_id]
        if len(now_rows) != len(rows):
            raise NotCancellable(f"buyback {buyback_id} sent a transaction meanwhile; look again")
        current = await repo.get_buyback(session, buyback_id)
        await session.refresh(current)
        for r in open_rows:
            await repo.supersede(session, r)
        try:
            released = await repo.fail_and_release(
                session, buyback_id, current.status, f"cancelled by {by}",
                status=BuybackStatus.cancelled)
        except repo.StateChanged as exc:
            raise NotCancellable(str(exc)) from None
        await repo.add_event(session, buyback_id, "cancelled",
                             f"by {by}; {released} revenue event(s) unallocated again; "
                             f"{len(open_rows)} transaction(s) proven unminable")
    async with ctx.db.sessions() as session:
        return await repo.get_buyback(session, buyback_id), released
