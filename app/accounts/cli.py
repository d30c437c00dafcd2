"""`mia business create | credit | key`: the operators' business commands (app/cli.py wires them)."""

from __future__ import annotations

import argparse
import sys
from decimal import Decimal, InvalidOperation

from app.config import Settings

ACTOR = "cli"  # who a credit from the command line is booked as


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    business = sub.add_parser("business", help="manage businesses: create, credit, key")
    cmds = business.add_subparsers(dest="business_command", required=True)
    create = cmds.add_parser("create", help="create a business (prints its id and deposit_ref)")
    create.add_argument("name")
    create.add_argument("--email", default=None)
    create.add_argument("--phone", default=None)
    credit = cmds.add_parser("credit", help="credit USD to a business, once per reference")
    credit.add_argument("id", type=int)
    credit.add_argument("amount", help="USD as a decimal, e.g. 25.00")
    credit.add_argument("--reference", required=True, help="the payment's id (invoice, transfer)")
    credit.add_argument("--note", default=None)
    key = cmds.add_parser("key", help="create an API key for a business (printed once)")
    key.add_argument("id", type=int)
    key.add_argument("--scopes", default="chat", help="comma-separated: chat,idle")
    key.add_argument("--monthly-limit", default=None, help="USD a calendar month (UTC)")


def _usd(text: str | None, what: str, most: Decimal) -> Decimal | None:
    if text is None:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"{what} must be a decimal number of USD, e.g. 25.00") from None
    if not value.is_finite() or value < 0 or value != value.quantize(Decimal("0.000001")):
        raise ValueError(f"{what} must be a non-negative USD amount with at most six decimals")
    if value > most:
        raise ValueError(f"{what} is at most {most} USD")
    return value


async def run(settings: Settings, args: argparse.Namespace) -> int:
    from app.accounts import businesses
    from app.accounts.schemas import MAX_CREDIT, MAX_LIMIT
    from app.accounts.credits import credit_business
    from app.accounts import keys
    from app.db import Database
    from app.errors import AppError
    from app.models import LedgerKind

    db = Database(settings.database_url)
    try:
        if args.business_command == "create":
            async with db.transaction() as session:
                b = await businesses.create_business(session, args.name, contact_email=args.email,
                                                     contact_phone=args.phone)
            print(f"business {b.id} {b.name!r} created; deposit_ref: {b.deposit_ref}")
        elif args.business_command == "credit":
            amount = _usd(args.amount, "AMOUNT", MAX_CREDIT)
            if not amount:
                raise ValueError("AMOUNT must be more than 0")
            done = await credit_business(db, args.id, amount, reference=args.reference,
                                         actor=ACTOR, kind=LedgerKind.topup, note=args.note)
            state = "credited" if done.created else "already credited (nothing changed)"
            print(f"{done.entry.amount_usd} USD {state} to business {args.id} under reference "
                  f"{args.reference!r}: entry {done.entry.id}; balance {done.balance_usd} USD")
        else:
            limit = _usd(args.monthly_limit, "--monthly-limit", MAX_LIMIT)
            async with db.transaction() as session:
                b = await businesses.get_business(session, args.id)
                k, plaintext = await keys.create_key(session, b, args.scopes,
                                                        monthly_limit_usd=limit)
            cap = f", monthly limit {limit} USD" if limit is not None else ""
            print(f"API key {k.id} for business {b.id} {b.name!r} (scopes: {k.scopes}{cap}): "
                  f"{plaintext}")
        return 0
    except (AppError, ValueError) as exc:
        print(f"mia business: {getattr(exc, 'detail', exc)}", file=sys.stderr)
        return 2
    finally:
        await db.dispose()
