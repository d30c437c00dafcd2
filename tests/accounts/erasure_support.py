"""Where a marker string could still be after an erasure: a dump of the whole database (pg_dump,
or SQLite's own .dump), the SQLite file's raw bytes (free pages and the WAL included), and every
value of every Redis key under a test's prefix."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import redis as redis_sync
from sqlalchemy.engine import make_url

from app.db import is_sqlite


def sqlite_path(url: str) -> Path:
    return Path(make_url(url).database or "")


def database_dump(url: str) -> str:
    """Everything the database holds, as text: pg_dump's output, or SQLite's .dump."""
    if is_sqlite(url):
        conn = sqlite3.connect(sqlite_path(url))
        try:
            return "\n".join(conn.iterdump())
        finally:
            conn.close()
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    done = subprocess.run(["pg_dump", "--no-owner", dsn], capture_output=True, text=True,
                          check=True, timeout=60)
    return done.stdout


def sqlite_file_bytes(url: str) -> bytes:
    """The SQLite file and its WAL after a checkpoint: what a scan of the disk would find.
    Call with every connection of the app closed."""
    path = sqlite_path(url)
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    found = path.read_bytes()
    for extra in (Path(f"{path}-wal"), Path(f"{path}-journal")):
        if extra.exists():
            found += extra.read_bytes()
    return found


def redis_dump(redis_url: str, prefix: str) -> bytes:
    """Every key under `prefix` and every value of it, whatever its type."""
    r = redis_sync.Redis.from_url(redis_url)
    out: list[bytes] = []
    try:
        for key in r.scan_iter(match=f"{prefix}*", count=1000):
            out.append(key)
            kind = r.type(key).decode()
            if kind == "none":  # it expired between the scan and now (a rate-limit block)
                continue
            if kind == "string":
                out.append(r.get(key) or b"")
            elif kind == "list":
                out += r.lrange(key, 0, -1)
            elif kind == "set":
                out += list(r.smembers(key))
            elif kind == "hash":
                for k, v in r.hgetall(key).items():
                    out += [k, v]
            elif kind == "zset":
                out += [m for m, _ in r.zrange(key, 0, -1, withscores=True)]
            elif kind == "stream":
                for _, fields in r.xrange(key):
                    for k, v in fields.items():
                        out += [k, v]
            else:
                raise AssertionError(f"a Redis {kind} the scan cannot read: {key!r}")
    finally:
        r.close()
    return b"\n".join(out)
