"""Treasury request and response bodies. Token amounts are strings of integer base units
(JSON numbers lose precision past 2**53); USD amounts are decimal strings. Never floats."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

from pydantic import Field, PlainSerializer, field_validator

from app.models import BuybackStatus
from app.schemas import QueryParams, RequestBody, ResponseBody

Units = Annotated[int, PlainSerializer(str, return_type=str, when_used="json")]
USDStr = Annotated[Decimal, PlainSerializer(lambda d: format(d, "f"), return_type=str,
                                            when_used="json")]


class TriggerIn(RequestBody):
    amount_usd: Annotated[Decimal, Field(strict=False, gt=0, max_digits=20, decimal_places=6,
                                         description="a decimal string (or an integer); "
                                                     "JSON fractions are refused")] | None = None
    dry_run: bool = False

    @field_validator("amount_usd", mode="before")
    @classmethod
    def _no_float(cls, value: object) -> object:
        # 0.1 in JSON is already a binary fraction by the time it is parsed: money comes as text.
        if isinstance(value, float):
            raise ValueError('send USD as a decimal string, e.g. "12.50"')
        return value


class TriggerOut(ResponseBody):
    buyback_id: int
    status: str
    usd_amount: USDStr
    revenue_events: int


class ChunkOut(ResponseBody):
    amount_in: Units
    expected_out: Units
    amount_out_min: Units
    price_impact_bps: int


class DryRunOut(ResponseBody):
    dry_run: bool = True
    usd_amount: USDStr
    revenue_events: int
    quote_token: str
    serv_token: str
    quote_amount_in: Units
    expected_serv: Units
    expected_serv_decimal: str
    amount_out_min_total: Units
    price_impact_bps: int  # of the whole amount in one swap, LP fee included
    chunks: list[ChunkOut]
    treasury_quote_balance: Units


class TxOut(ResponseBody):
    kind: str
    seq: int
    tx_hash: str
    nonce: int
    status: str
    amount_in: Units | None
    amount_out_min: Units | None
    amount_out: Units | None
    block_number: int | None
    gas_used: int | None
    created_at: datetime
    mined_at: datetime | None
    explorer_url: str | None


class EventOut(ResponseBody):
    kind: str
    detail: str
    created_at: datetime


class BuybackOut(ResponseBody):
    id: int
    status: str
    active: bool
    usd_amount: USDStr  # = usd_claimed (the seed's name)
    usd_claimed: USDStr  # the revenue events it claimed
    usd_swapped: USDStr | None  # stablecoin its mined swaps spent (None until swapping ends)
    usd_returned: USDStr | None  # usd_claimed - usd_swapped, back to unallocated once burned
    revenue_events: int
    quote_amount_in: Units | None
    amount_out_min_total: Units | None
    serv_received: Units | None
    serv_burned: Units | None
    quote_unspent: Units | None
    triggered_by: str
    failure_reason: str | None
    gas_used_total: int
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    transactions: list[TxOut]
    events: list[EventOut]  # pauses (and why), reorgs, carry-overs, a cancel


class BuybackList(ResponseBody):
    items: list[BuybackOut]
    total: int
    limit: int
    offset: int


class PageQuery(QueryParams):
    limit: int = Field(50, ge=1, le=200)
    offset: int = Field(0, ge=0, le=2**31 - 1)  # larger binds overflow the databases (a 500)


class BuybackQuery(PageQuery):
    status: BuybackStatus | None = None  # an enum: free text could carry NUL (a 500 on PostgreSQL)


class BurnOut(ResponseBody):
    buyback_id: int
    serv_burned: Units
    serv_burned_decimal: str
    usd_amount: USDStr  # = usd_claimed (the seed's name)
    usd_claimed: USDStr
    usd_swapped: USDStr  # what the swaps spent; less than claimed for a partial buyback
    partial: bool
    swap_tx_hashes: list[str]
    swap_blocks: list[int]
    burn_tx_hash: str
    burn_block: int | None
    burned_at: datetime | None
    swap_explorer_urls: list[str]
    burn_explorer_url: str | None
    verify_url: str


class BurnList(ResponseBody):
    items: list[BurnOut]
    total: int
    limit: int
    offset: int


class SummaryOut(ResponseBody):
    token: str
    serv_token: str
    burn_address: str
    decimals: int
    burns: int
    total_usd: USDStr
    recorded_burned: Units
    recorded_burned_decimal: str
    chain_burn_address_balance: Units
    chain_burn_address_balance_decimal: str
    difference: Units  # chain balance - recorded (others may also send to the burn address)
    difference_decimal: str
    # what the chain's Transfer logs say the treasury sent to the burn address, to compare with
    # recorded_burned + recorded_in_flight (a burn mined, not yet final, of the active buyback)
    chain_burned_by_treasury: Units
    chain_burned_by_treasury_decimal: str
    recorded_in_flight: Units
    block_number: int
    # the revenue ledger, reconciled to the micro-dollar:
    # revenue_usd = swapped_usd + unallocated_usd + in_flight_usd
    revenue_usd: USDStr  # every charge: idle jobs and priced chat (carry-overs are not new)
    swapped_usd: USDStr  # stablecoin spent by finished buybacks
    unallocated_usd: USDStr  # claimable now, carry-overs of partial buybacks included
    in_flight_usd: USDStr  # claimed by the active buyback
    ledger_reconciled: bool  # the USD equation above holds
    chain_reconciled: bool  # the chain's burns by the treasury equal the records
    reconciled: bool  # both
    disagreements: list[str]  # which part disagrees, and by how much; empty when reconciled
    # USD in: stablecoin deposits credited to businesses (GET /deposits lists them), beside the
    # USD bought back (total_usd) and the $SERV burned
    deposits_credited: int
    deposits_usd: USDStr
    quote_token: str  # the stablecoin deposits are made in
    treasury_address: str  # where deposits go (and the account that buys back and burns)


class CheckOut(ResponseBody):
    name: str
    ok: bool
    detail: str


class VerifyOut(ResponseBody):
    buyback_id: int
    burn_tx_hash: str | None
    verified: bool
    checks: list[CheckOut]
    block_number: int


class PauseIn(RequestBody):
    reason: str | None = Field(None, max_length=200)


class ControlOut(ResponseBody):
    paused: bool
    reason: str | None
    changed_by: str | None
    updated_at: datetime


class CancelOut(ResponseBody):
    buyback_id: int
    status: str
    failure_reason: str | None
    revenue_events_released: int
