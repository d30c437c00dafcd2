"""Request and response bodies of businesses, keys, credits, the ledger, /account and /usage.
USD amounts are decimal strings in and out (JSON numbers would be floats); never floats."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import Field, PlainSerializer, field_validator

from app.models import USD_PLACES
from app.schemas import QueryParams, RequestBody, ResponseBody

# always six places ("25.000000"), whatever the Decimal's own exponent
USDStr = Annotated[Decimal, PlainSerializer(lambda d: format(d.quantize(USD_PLACES), "f"),
                                            return_type=str, when_used="json")]
MAX_CREDIT = Decimal("1000000")  # one credit at most (USD): a typo's extra zeros stop here
MAX_LIMIT = Decimal("1000000000")  # a key's monthly limit, a low-balance threshold at most


def _usd_in(description: str, **bounds: object) -> object:
    return Annotated[Decimal, Field(strict=False, max_digits=16, decimal_places=6,
                                    description=description, **bounds)]  # type: ignore[arg-type]


def _no_float(value: object) -> object:
    # 0.1 in JSON is already a binary fraction by the time it is parsed: money comes as text.
    if isinstance(value, float):
        raise ValueError('send USD as a decimal string, e.g. "12.50"')
    return value


def _finite(value: Decimal | None) -> Decimal | None:
    if value is not None and not value.is_finite():
        raise ValueError("a finite amount")
    return value


PositiveUSD = _usd_in('a decimal string, e.g. "25.00" (at most six decimals)', gt=0,
                      le=MAX_CREDIT)
SignedUSD = _usd_in("a decimal string; negative takes from the balance", ge=-MAX_CREDIT,
                    le=MAX_CREDIT)
LimitUSD = _usd_in("USD a calendar month (UTC); null: no limit", ge=0, le=MAX_LIMIT)
ThresholdUSD = _usd_in("GET /account warns (low_balance) below this balance", ge=0,
                       le=MAX_LIMIT)
REFERENCE = Field(min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$",
                  description="the payment's external id (invoice, transfer): a credit with a "
                              "reference already used is not credited again")
NOTE = Field(default=None, max_length=500)


class BusinessIn(RequestBody):
    name: str = Field(min_length=1, max_length=200)
    contact_email: str | None = Field(default=None, max_length=254)
    contact_phone: str | None = Field(default=None, max_length=32)
    retention_days: int | None = Field(default=None, ge=0, le=36_500,
                                       description="null: the server's CHAT_RETENTION_DAYS; "
                                                   "0: kept")
    low_balance_usd: ThresholdUSD | None = None  # type: ignore[valid-type]

    _money = field_validator("low_balance_usd", mode="before")(_no_float)
    _fin = field_validator("low_balance_usd", mode="after")(_finite)


class BusinessPatch(RequestBody):
    """Only the fields sent change; null clears a contact, the threshold or the retention."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    contact_email: str | None = Field(default=None, max_length=254)
    contact_phone: str | None = Field(default=None, max_length=32)
    retention_days: int | None = Field(default=None, ge=0, le=36_500)
    low_balance_usd: ThresholdUSD | None = None  # type: ignore[valid-type]

    _money = field_validator("low_balance_usd", mode="before")(_no_float)
    _fin = field_validator("low_balance_usd", mode="after")(_finite)


class BusinessOut(ResponseBody):
    id: int
    name: str
    contact_email: str | None
    contact_phone: str | None
    retention_days: int | None = Field(description="null: the server's default applies")
    low_balance_usd: USDStr | None
    balance_usd: USDStr
    deposit_ref: str | None
    created_at: datetime
    removed_at: datetime | None


class BusinessList(ResponseBody):
    items: list[BusinessOut]
    next_before: int | None = Field(description="pass as ?before= for the next page")


class PageQuery(QueryParams):
    before: int | None = Field(default=None, ge=1, le=2**31 - 1,
                               description="the id the previous page ended at")
    limit: int = Field(50, ge=1, le=200)


class KeyIn(RequestBody):
    scopes: list[Literal["chat", "idle"]] = Field(default=["chat"], min_length=1, max_length=2)
    monthly_limit_usd: LimitUSD | None = None  # type: ignore[valid-type]

    _money = field_validator("monthly_limit_usd", mode="before")(_no_float)
    _fin = field_validator("monthly_limit_usd", mode="after")(_finite)


class KeyLimitIn(RequestBody):
    monthly_limit_usd: LimitUSD | None  # type: ignore[valid-type]

    _money = field_validator("monthly_limit_usd", mode="before")(_no_float)
    _fin = field_validator("monthly_limit_usd", mode="after")(_finite)


class KeyOut(ResponseBody):
    id: int
    business_id: int
    prefix: str
    scopes: list[str]
    monthly_limit_usd: USDStr | None
    spent_this_month_usd: USDStr = Field(description="charges this calendar month (UTC)")
    held_usd: USDStr = Field(description="open holds: its jobs in flight")
    created_at: datetime
    revoked_at: datetime | None


class KeyCreated(KeyOut):
    key: str = Field(description="the key itself: shown this once, stored only as a hash")


class KeyList(ResponseBody):
    keys: list[KeyOut]


class CreditIn(RequestBody):
    amount_usd: PositiveUSD  # type: ignore[valid-type]
    reference: str = REFERENCE
    note: str | None = NOTE

    _money = field_validator("amount_usd", mode="before")(_no_float)
    _fin = field_validator("amount_usd", mode="after")(_finite)


class AdjustmentIn(RequestBody):
    amount_usd: SignedUSD  # type: ignore[valid-type]
    reference: str = REFERENCE
    note: str = Field(min_length=1, max_length=500, description="why: adjustments explain")

    _money = field_validator("amount_usd", mode="before")(_no_float)

    @field_validator("amount_usd", mode="after")
    @classmethod
    def _not_zero(cls, value: Decimal) -> Decimal:
        if not value.is_finite() or value == 0:
            raise ValueError("a non-zero finite amount")
        return value


class EntryOut(ResponseBody):
    id: int
    business_id: int
    kind: str = Field(description="topup, hold, charge, release, refund or adjustment")
    amount_usd: USDStr = Field(description="signed: what it added to the balance")
    job_kind: str | None
    job_id: str | None
    api_key_id: int | None
    model: str | None
    tokens: int | None
    price_per_1k_usd: USDStr | None
    reference: str | None
    actor: str | None
    note: str | None
    created_at: datetime


class CreditOut(ResponseBody):
    entry: EntryOut
    balance_usd: USDStr = Field(description="the business's balance after it")


class LedgerPage(ResponseBody):
    items: list[EntryOut]
    next_before: int | None = Field(description="pass as ?before= for older entries")


class KeyAccount(ResponseBody):
    id: int
    prefix: str
    scopes: list[str]
    monthly_limit_usd: USDStr | None
    spent_this_month_usd: USDStr
    held_usd: USDStr


class DepositInstructions(ResponseBody):
    deposit_ref: str | None
    deposit_memo_hex: str | None = Field(description="'0x' + deposit_ref: the bytes to append")
    treasury_address: str | None = Field(description="where deposits go (null: not configured)")
    quote_token_address: str | None = Field(description="the stablecoin to send")
    chain_id: int
    how: str


class AccountOut(ResponseBody):
    business: BusinessOut
    retention_days_effective: int = Field(description="0: conversations are kept")
    balance_usd: USDStr
    held_usd: USDStr = Field(description="open holds: jobs in flight")
    spent_this_month_usd: USDStr = Field(description="charges this calendar month (UTC)")
    low_balance: bool
    low_balance_usd: USDStr | None = Field(description="the threshold (null: none set)")
    key: KeyAccount
    deposit: DepositInstructions


class UsageQuery(QueryParams):
    start: datetime | date | None = Field(
        default=None, alias="from",
        description="inclusive, ISO date or datetime (UTC if no offset); default: the first "
                    "of this month")
    end: datetime | date | None = Field(
        default=None, alias="to", description="exclusive; default: the first of next month")
    group_by: Literal["day", "key", "model", "kind"] = "day"


class UsageRow(ResponseBody):
    group: str = Field(description="the day (YYYY-MM-DD), key prefix, model or kind")
    jobs: int
    output_tokens: int
    cost_usd: USDStr


class UsageOut(ResponseBody):
    start: datetime = Field(description="the range asked for (?from=), inclusive")
    end: datetime = Field(description="?to=, exclusive")
    group_by: str
    rows: list[UsageRow]
    total_jobs: int
    total_output_tokens: int
    total_cost_usd: USDStr
