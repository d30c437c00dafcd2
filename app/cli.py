"""The `mia` command: serve, dev, worker, migrate, apikey, business, devnet, verify-burns,
verify-deposits, deposit."""

from __future__ import annotations

import argparse
import asyncio
import sys

from pydantic import ValidationError

from app.config import Settings


def settings_errors(exc: ValidationError) -> list[str]:
    """One line per invalid setting, named as its environment variable."""
    return [f"{'.'.join(str(p) for p in e['loc']).upper() or 'settings'}: "
            f"{e['msg'].removeprefix('Value error, ')}" for e in exc.errors()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mia", description="MIA backend")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the API server")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int, default=1)

    sub.add_parser("dev", help="run the whole system locally on embedded defaults")
    sub.add_parser("worker", help="run the arq worker (RunPod idle jobs, lease reaper, reconciler)")
    sub.add_parser("migrate", help="upgrade the database schema to the latest revision")

    apikey = sub.add_parser("apikey", help="manage business API keys")
    apikey_sub = apikey.add_subparsers(dest="apikey_command", required=True)
    create = apikey_sub.add_parser("create", help="create a key (printed once)")
    create.add_argument("--business", required=True)
    create.add_argument("--scopes", default="chat", help="comma-separated: chat,idle")
    revoke = apikey_sub.add_parser("revoke", help="revoke a key by id or by its prefix")
    which = revoke.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", type=int)
    which.add_argument("--prefix", help="the key's first 10 characters, as listed")
    apikey_sub.add_parser("list", help="list keys (prefixes only; keys are never shown again)")

    from app.accounts.cli import add_parser as add_business_parser

    add_business_parser(sub)

    canary = sub.add_parser("canary", help="canary prompts with reference answers (app/trust)")
    canary_sub = canary.add_subparsers(dest="canary_command", required=True)
    canary_add = canary_sub.add_parser("add", help="add one canary")
    canary_add.add_argument("--prompt", required=True)
    canary_add.add_argument("--reference", required=True,
                            help="the answer a trusted run of the model gave (greedy decoding)")
    canary_add.add_argument("--model", default=None,
                            help="the model it is for (only miners declaring it get it)")
    canary_add.add_argument("--context", default=None)
    canary_load = canary_sub.add_parser(
        "load", help="add canaries from a JSON-lines file: {prompt, reference, model?, "
                     "context?, history?: [{role, content}]} a line")
    canary_load.add_argument("file")

    sub.add_parser("devnet", help="deploy the local chain contracts (see `mia devnet --help`)",
                   add_help=False)

    sub.add_parser("verify-burns", add_help=False,
                   help="check every published burn against the chain alone (`--rpc URL --api URL`)")

    sub.add_parser("verify-deposits", add_help=False,
                   help="check every credited deposit against the chain alone "
                        "(`--rpc URL --api URL`)")

    deposit = sub.add_parser("deposit", help="DEV ONLY: send the local chain's stablecoin to the "
                                             "treasury with a business's deposit reference")
    deposit.add_argument("--business-ref", required=True, help="16 hex characters")
    deposit.add_argument("--amount", required=True, help="USD, e.g. 10 or 12.50")
    deposit.add_argument("--devnet", default=".dev/devnet.json",
                         help="addresses of `mia dev`'s chain, where the settings name none")

    args, rest = parser.parse_known_args(argv)
    if args.command == "verify-deposits":  # like verify-burns: no database, no settings
        from chain.deposit_audit import main as deposit_audit_main

        return deposit_audit_main(rest, prog="mia verify-deposits")
    if args.command == "devnet":
        from chain.devnet import main as devnet_main

        return devnet_main(rest)
    if args.command == "verify-burns":  # reads no database and no settings: an auditor's tool
        from chain.audit import main as audit_main

        return audit_main(rest, prog="mia verify-burns")
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        settings = Settings()
    except ValidationError as exc:
        for line in settings_errors(exc):
            print(f"mia {args.command}: {line}", file=sys.stderr)
        return 2
    from app import observability

    observability.setup_logging(settings)  # LOG_FORMAT: text, or one JSON object a line
    if args.command in ("serve", "worker"):
        # before the first metric is built: every process of the command writes its own file
        # in this directory, and /metrics adds them up
        settings = settings.model_copy(
            update={"prometheus_multiproc_dir": observability.prepare_process(settings)})
    if args.command in ("serve", "worker") and settings.env == "production":
        problems = settings.production_problems()
        for problem in problems:
            print(f"mia {args.command}: refusing to start with ENV=production: {problem}",
                  file=sys.stderr)
        if problems:
            return 2
    if args.command == "migrate":
        from app.migrate import upgrade

        upgrade(settings.database_url)
        print("database schema is at the latest revision")
        return 0
    if args.command == "apikey" and args.apikey_command == "revoke":
        return asyncio.run(revoke_api_key(settings, args.id, args.prefix))
    if args.command == "apikey" and args.apikey_command == "list":
        return asyncio.run(list_api_keys(settings))
    if args.command == "canary":
        return asyncio.run(add_canaries(settings, args))
    if args.command == "deposit":
        from app.devdeposit import send_dev_deposit

        return asyncio.run(send_dev_deposit(settings, args.business_ref, args.amount,
                                            args.devnet))
    if args.command == "business":
        from app.accounts.cli import run as run_business

        return asyncio.run(run_business(settings, args))
    if args.command == "worker":
        from jobs.worker import create_worker

        create_worker(settings).run()
        return 0
    if args.command == "apikey":
        from app.accounts.keys import issue_api_key
        from app.errors import AppError

        try:
            key = asyncio.run(issue_api_key(settings.database_url, args.business, args.scopes))
        except AppError as exc:
            print(f"mia apikey: {exc.detail}", file=sys.stderr)
            return 2
        print(f"API key for business {args.business!r} (scopes: {args.scopes}): {key}")
        return 0
    if args.command == "serve":
        return serve_api(settings, host=args.host, port=args.port, workers=args.workers)
    if args.command == "dev":
        from app.devrun import run_dev

        return run_dev()
    return 2


async def revoke_api_key(settings: Settings, key_id: int | None, prefix: str | None) -> int:
    from app.auth import apikeys
    from app.db import Database
    from app.errors import AppError
    from app.models import utcnow

    db = Database(settings.database_url)
    try:
        async with db.transaction() as session:
            key = await apikeys.revoke(session, key_id, utcnow(), prefix=prefix)
    except AppError as exc:
        print(f"mia apikey: {exc.detail}", file=sys.stderr)
        return 2
    finally:
        await db.dispose()
    if key is None:
        print("no such API key", file=sys.stderr)
        return 1
    print(f"API key {key.id} ({key.prefix}...) revoked at {key.revoked_at:%Y-%m-%d %H:%M:%S}Z")
    if not await _announce_revocation(settings):
        print(f"Redis unreachable: running servers honour the revocation within "
              f"{settings.auth_cache_ttl_s:g} s (AUTH_CACHE_TTL_S)", file=sys.stderr)
    return 0


async def _announce_revocation(settings: Settings) -> bool:
    from app.auth.cache import forget_everywhere
    from app.redis_client import open_redis

    redis = open_redis(settings.redis_url, cluster=settings.redis_cluster, command_timeout_s=2.0)
    try:
        return await forget_everywhere(redis, settings.redis_prefix)
    finally:
        await redis.aclose()


async def add_canaries(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from app.db import Database
    from app.trust import add_canaries as add, parse_canaries

    try:
        if args.canary_command == "load":
            items = parse_canaries(Path(args.file).read_text(encoding="utf-8"))
        else:
            items = [dict(prompt=args.prompt, reference=args.reference, model=args.model,
                          context=args.context)]
    except (OSError, ValueError) as exc:
        print(f"mia canary: {exc}", file=sys.stderr)
        return 2
    db = Database(settings.database_url)
    try:
        ids = await add(db, items)
    except ValueError as exc:
        print(f"mia canary: {exc}", file=sys.stderr)
        return 2
    finally:
        await db.dispose()
    print(f"added {len(ids)} canar{'y' if len(ids) == 1 else 'ies'}: ids {', '.join(map(str, ids))}")
    return 0


async def list_api_keys(settings: Settings) -> int:
    from app.auth import apikeys
    from app.db import Database

    db = Database(settings.database_url)
    try:
        async with db.sessions() as session:
            rows = await apikeys.list_keys(session)
    finally:
        await db.dispose()
    for key, business in rows:
        state = f"revoked {key.revoked_at:%Y-%m-%d}" if key.revoked_at else "active"
        print(f"{key.id:>5}  {key.prefix}...  {business:<30} {key.scopes:<10} {state}")
    return 0


def serve_api(settings: Settings, *, host: str | None = None, port: int | None = None,
              workers: int = 1) -> int:
    if settings.server_impl == "granian":
        from app.serving import granian_server
        granian_server(settings, host or settings.host, port or settings.port, workers).serve()
        return 0
    import uvicorn

    from app.observability import uvicorn_log_config
    from app.serving import uvicorn_limits

    uvicorn.run("app.main:create_app", factory=True, host=host or settings.host,
                port=port or settings.port, workers=workers, log_level=settings.log_level.lower(),
                log_config=uvicorn_log_config(settings), **uvicorn_limits(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
