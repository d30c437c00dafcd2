"""On-chain deposits: stablecoin Transfers into the treasury, credited to the business whose
deposit reference the transaction carries (chain/deposits.py: the memo scheme).

One `scan(ctx)` pass (the worker runs one every DEPOSIT_SCAN_INTERVAL_S):

1. Read the stablecoin's Transfer logs into the treasury from the cursor (or a `depth`-block
   margin below the deepest-but-one window, whichever is lower) to the head: the window that is
   not yet final is read again on every pass, so a deposit a reorg moves is found where it is.
2. Each transaction found there, and each one the records still watch (a `seen` deposit, or a
   credited/unattributed one less than SAFETY_DEPTHS x depth deep), is looked up on the
   canonical chain: found -> its rows are (re)placed at its block now (a dropped one comes back
   to `seen`: a reorged transaction is often mined again); gone, with the recorded block no
   longer the chain's block at that number -> seen/unattributed rows are `dropped` (never
   credited), a credited row is `reversed` once (an adjustment entry).
3. A `seen` row whose transaction was found this pass at least `depth` blocks deep (its own
   block counted, CONFIRMATIONS) is credited to its business (ledger.credit, reference
   deposit:{tx}:{log}, actor "chain") or marked `unattributed`.
4. The cursor moves only to blocks that are `depth` deep.

Every status change is one conditional UPDATE on the expected status, and the ledger entries are
idempotent on their references, so two passes at once (two workers) credit a deposit once and
reverse it at most once. USD = base units / 10**decimals, rounded DOWN to the micro-dollar.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Decimal

from sqlalchemy import Table, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import ledger
from app.accounts.businesses import new_deposit_ref
from app.context import AppContext
from app.errors import Conflict, NotFound
from app.models import USD_PLACES, Business, ChainCursor, Deposit, LedgerEntry, LedgerKind, utcnow
from app.treasury.onchain import Treasury, get_treasury
from chain.deposits import DepositTx, canonical_hash, deposit_tx, transfer_logs

log = logging.getLogger("app.accounts.deposits")
CURSOR = "deposits"
SAFETY_DEPTHS = 2  # credited deposits are re-checked until this many times `depth` deep
MAX_REQUESTS = 20  # eth_getLogs calls per pass at most (a long catch-up takes several passes)
WATCHED = ("seen", "credited", "unattributed")


def usd_of(units: int, decimals: int) -> Decimal:
    """Stablecoin base units as USD, rounded DOWN to the micro-dollar: never credit more than
    arrived."""
    return Decimal(units).scaleb(-decimals).quantize(USD_PLACES, rounding=ROUND_FLOOR)


def credit_reference(tx_hash: str, log_index: int) -> str:
    return f"deposit:{tx_hash}:{log_index}"


def reversal_reference(credit: str) -> str:
    return "reversal:" + credit.removeprefix("deposit:")


@dataclass
class ScanResult:
    head: int
    from_block: int
    to_block: int
    cursor: int
    new: int = 0
    credited: list[int] = field(default_factory=list)
    unattributed: list[int] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)
    reversed: list[int] = field(default_factory=list)


def _insert_ignoring_conflict(session: AsyncSession, table: Table):  # type: ignore[no-untyped-def]
    insert_for = sqlite_insert if session.bind.dialect.name == "sqlite" else pg_insert
    return insert_for(table).on_conflict_do_nothing()


async def scan(ctx: AppContext) -> ScanResult:
    """One pass (see the module's docstring). Raises on chain errors; the next pass retries."""
    t = await get_treasury(ctx)
    s = ctx.settings
    depth = max(s.confirmations, 1)
    head = int(await t.w3.eth.block_number)
    final = head - depth + 1  # the newest block with `depth` confirmations
    floor = s.deposit_start_block or 0
    async with ctx.db.sessions() as session:
        cursor = (await session.execute(select(ChainCursor.block_number).where(
            ChainCursor.name == CURSOR))).scalar()
        watched = list((await session.execute(
            select(Deposit.tx_hash).where(
                (Deposit.status == "seen") | (Deposit.status.in_(WATCHED)
                                              & (Deposit.block_number > head - SAFETY_DEPTHS * depth)))
            .distinct())).scalars())
    if cursor is None:  # first pass: DEPOSIT_START_BLOCK, else what is not final yet
        cursor = (s.deposit_start_block if s.deposit_start_block is not None
                  else max(final - depth, 0)) - 1
    from_block = max(floor, min(cursor + 1, final - depth), 0)
    to_block = min(head, from_block + s.deposit_max_blocks * MAX_REQUESTS - 1)
    logs = await transfer_logs(t.w3, t.quote, t.address, from_block, to_block,
                               step=s.deposit_max_blocks)
    result = ScanResult(head=head, from_block=from_block, to_block=to_block, cursor=cursor)
    decimals = await t.decimals(t.quote)
    hashes = list(dict.fromkeys([x.tx_hash for x in logs] + watched))
    deep: list[DepositTx] = []
    for tx_hash in hashes:
        found = await deposit_tx(t.w3, tx_hash, t.quote, t.address)
        if found is None:
            await _gone(ctx, t, tx_hash, result)
            continue
        result.new += await _place(ctx, t, found, decimals, result)
        if found.block_number <= final:
            deep.append(found)
    for found in deep:
        await _settle(ctx, found, result)
    new_cursor = min(to_block, final)
    if new_cursor > cursor:
        async with ctx.db.transaction() as session:
            await _advance(session, new_cursor)
        result.cursor = new_cursor
    if result.credited or result.reversed or result.dropped or result.unattributed:
        log.info("deposits: blocks %d..%d (head %d): %d credited, %d unattributed, %d dropped, "
                 "%d reversed", from_block, to_block, head, len(result.credited),
                 len(result.unattributed), len(result.dropped), len(result.reversed))
    return result


async def _advance(session: AsyncSession, block: int) -> None:
    await session.execute(_insert_ignoring_conflict(session, ChainCursor.__table__).values(
        name=CURSOR, block_number=block, updated_at=utcnow()))
    await session.execute(update(ChainCursor).where(ChainCursor.name == CURSOR,
                                                    ChainCursor.block_number < block)
                          .values(block_number=block, updated_at=utcnow()))


async def business_of(session: AsyncSession, reference: str | None) -> int | None:
    """The business a deposit reference names (lowercase hex), if it is still a customer."""
    if not reference:
        return None
    return (await session.execute(select(Business.id).where(
        func.lower(Business.deposit_ref) == reference.lower(),
        Business.removed_at.is_(None)))).scalar()


async def _place(ctx: AppContext, t: Treasury, found: DepositTx, decimals: int,
                 result: ScanResult) -> int:
    """Rows of a transaction found on the canonical chain, paired with its Transfers by their
    order in it, moved to the block it is in now; new ones inserted as `seen`. Returns how many
    were new."""
    new = 0
    async with ctx.db.transaction() as session:
        rows = list((await session.execute(select(Deposit).where(
            Deposit.tx_hash == found.tx_hash).order_by(Deposit.log_index))).scalars())
        pairs = list(zip(rows, found.transfers))
        # A re-mined transaction's logs all move by one offset: update in the order that never
        # lets two rows hold one (tx_hash, log_index) at once.
        if pairs and pairs[0][1][0] > pairs[0][0].log_index:
            pairs.reverse()
        for row, (log_index, _, amount) in pairs:
            if (row.block_hash, row.log_index) == (found.block_hash, log_index) and \
                    row.status != "dropped":
                continue
            values: dict[str, object] = dict(block_number=found.block_number,
                                             block_hash=found.block_hash, log_index=log_index)
            if row.status in ("seen", "dropped"):  # not credited: the chain's amount now
                values.update(amount=amount, amount_usd=usd_of(amount, decimals), status="seen")
            await session.execute(update(Deposit).where(Deposit.id == row.id,
                                                        Deposit.status == row.status)
                                  .values(**values).execution_options(synchronize_session=False))
            if row.status == "dropped":
                log.info("deposit %d: transaction %s is back in block %d", row.id, row.tx_hash,
                         found.block_number)
        # Rows with no Transfer left in the transaction (mined again, but it reverted or moved
        # less this time): as gone as a transaction off the chain.
        for row in rows[len(found.transfers):]:
            if row.status in WATCHED:
                await _undo(session, row, result)
        business = await business_of(session, found.memo)
        for log_index, sender, amount in found.transfers[len(rows):]:
            inserted = await session.execute(
                _insert_ignoring_conflict(session, Deposit.__table__).values(
                    tx_hash=found.tx_hash, log_index=log_index, block_number=found.block_number,
                    block_hash=found.block_hash, from_address=sender,
                    token_address=t.quote,
                    amount=amount, amount_usd=usd_of(amount, decimals), reference=found.memo,
                    business_id=business, status="seen", seen_at=utcnow()))
            new += inserted.rowcount or 0
    return new


async def _settle(ctx: AppContext, found: DepositTx, result: ScanResult) -> None:
    """Credit (or mark unattributed) the transaction's `seen` rows: it is `depth` deep at the
    block it was found in this pass."""
    async with ctx.db.transaction() as session:
        rows = list((await session.execute(select(Deposit).where(
            Deposit.tx_hash == found.tx_hash, Deposit.status == "seen",
            Deposit.block_hash == found.block_hash))).scalars())
        for row in rows:
            business = row.business_id or await business_of(session, row.reference)
            if business is None or row.amount_usd <= 0:
                if await _move(session, row.id, "seen", status="unattributed"):
                    result.unattributed.append(row.id)
                continue
            if not await _move(session, row.id, "seen", status="credited", business_id=business,
                               credited_at=utcnow()):
                continue  # another pass got there first
            entry, _ = await ledger.credit(session, business, row.amount_usd, actor="chain",
                                           reference=credit_reference(row.tx_hash, row.log_index),
                                           note=f"deposit {row.amount} base units in block "
                                                f"{row.block_number}")
            await _move(session, row.id, "credited", ledger_entry_id=entry)
            result.credited.append(row.id)


async def _move(session: AsyncSession, deposit_id: int, expected: str, **values: object) -> bool:
    r = await session.execute(update(Deposit).where(Deposit.id == deposit_id,
                                                    Deposit.status == expected)
                              .values(**values).execution_options(synchronize_session=False))
    return r.rowcount == 1


async def _gone(ctx: AppContext, t: Treasury, tx_hash: str, result: ScanResult) -> None:
    """The transaction is on no canonical block now. Its rows change only when the block they
    were recorded in is no longer the chain's block at that number (positive evidence of a
    reorg: a node that merely failed to answer a receipt changes nothing)."""
    async with ctx.db.sessions() as session:
        rows = list((await session.execute(select(Deposit).where(
            Deposit.tx_hash == tx_hash, Deposit.status.in_(WATCHED)))).scalars())
    for row in rows:
        if await canonical_hash(t.w3, row.block_number) == row.block_hash:
            log.warning("deposit %d: no receipt for %s, but its block %d is still the chain's; "
                        "the node may lag, checking again next pass", row.id, tx_hash,
                        row.block_number)
            continue
        async with ctx.db.transaction() as session:
            await _undo(session, row, result)


async def _undo(session: AsyncSession, row: Deposit, result: ScanResult) -> None:
    """A deposit that is not on the chain: dropped if it was not credited, else reversed."""
    if row.status in ("seen", "unattributed"):
        if await _move(session, row.id, row.status, status="dropped"):
            result.dropped.append(row.id)
            log.warning("deposit %d: transaction %s left the chain before it was credited; "
                        "dropped", row.id, row.tx_hash)
    elif await reverse(session, row):
        result.reversed.append(row.id)


async def reverse(session: AsyncSession, row: Deposit) -> bool:
    """A credited deposit whose transaction left the chain: status reversed (once) and an
    adjustment entry taking its amount back (idempotent on its reference). The balance may go
    below zero: the money never arrived."""
    if not await _move(session, row.id, "credited", status="reversed"):
        return False
    credit_ref = credit_reference(row.tx_hash, row.log_index)
    if row.ledger_entry_id is not None:
        credit_ref = (await session.execute(select(LedgerEntry.reference).where(
            LedgerEntry.id == row.ledger_entry_id))).scalar() or credit_ref
    entry, _ = await ledger.credit(session, int(row.business_id or 0), -row.amount_usd,
                                   reference=reversal_reference(credit_ref), actor="chain",
                                   kind=LedgerKind.adjustment,
                                   note=f"deposit {row.id} reversed: its transaction "
                                        f"{row.tx_hash} left the chain")
    await _move(session, row.id, "reversed", reversal_entry_id=entry)
    log.warning("deposit %d: transaction %s left the chain after it was credited; reversed "
                "%s USD", row.id, row.tx_hash, row.amount_usd)
    return True


async def assign(session: AsyncSession, deposit_id: int, business_id: int, actor: str) -> Deposit:
    """An operator credits an unattributed deposit to a business (once: 409 otherwise)."""
    row = await session.get(Deposit, deposit_id)
    if row is None:
        raise NotFound(f"no deposit {deposit_id}", code="deposit_not_found")
    if await session.get(Business, business_id) is None:
        raise NotFound(f"no business {business_id}", code="business_not_found")
    if row.amount_usd <= 0:
        raise Conflict("this deposit is worth less than a micro-dollar", code="deposit_dust")
    if not await _move(session, deposit_id, "unattributed", status="credited",
                       business_id=business_id, credited_at=utcnow()):
        raise Conflict(f"deposit {deposit_id} is {row.status}, not unattributed",
                       code="deposit_not_unattributed")
    entry, _ = await ledger.credit(session, business_id, row.amount_usd, actor=actor,
                                   reference=credit_reference(row.tx_hash, row.log_index),
                                   note=f"unattributed deposit {deposit_id} assigned")
    await _move(session, deposit_id, "credited", ledger_entry_id=entry)
    await session.refresh(row)
    return row


async def ensure_deposit_ref(session: AsyncSession, business_id: int) -> str:
    """The business's deposit reference, given one first if it has none (one conditional
    UPDATE: two callers at once agree on the first one written)."""
    await session.execute(update(Business).where(Business.id == business_id,
                                                 Business.deposit_ref.is_(None))
                          .values(deposit_ref=new_deposit_ref())
                          .execution_options(synchronize_session=False))
    ref = (await session.execute(select(Business.deposit_ref).where(
        Business.id == business_id))).scalar()
    if ref is None:
        raise NotFound(f"no business {business_id}", code="business_not_found")
    return ref
