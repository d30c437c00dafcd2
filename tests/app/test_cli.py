"""`mia migrate` and `mia apikey create`: the key printed once (last word) works; only its hash is kept."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys

from tests.support.harness import running_app


def mia(*args: str, db: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": db}
    return subprocess.run([sys.executable, "-m", "app.cli", *args], env=env, capture_output=True,
                          text=True, timeout=60)


async def test_apikey_create_prints_a_working_key_once(tmp_path, settings_factory):  # type: ignore[no-untyped-def]
    path = tmp_path / "cli.db"
    db = f"sqlite+aiosqlite:///{path}"
    assert mia("migrate", db=db).returncode == 0
    out = mia("apikey", "create", "--business", "Acme Bikes", db=db)
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    assert len(lines) == 1
    key = lines[0].split()[-1]
    assert key.startswith("mia_k_")

    rows = sqlite3.connect(path).execute(
        "SELECT b.name, k.key_hash, k.scopes FROM api_keys k JOIN businesses b ON b.id = k.business_id"
    ).fetchall()
    assert rows == [("Acme Bikes", hashlib.sha256(key.encode()).hexdigest(), "chat")]
    assert key not in path.read_bytes().decode("latin-1")

    again = mia("apikey", "create", "--business", "Acme Bikes", db=db)  # same business, new key
    assert sqlite3.connect(path).execute("SELECT count(*) FROM businesses").fetchone() == (1,)
    assert again.stdout.split()[-1] != key

    async with running_app(settings_factory(db)) as api:
        assert (await api.chat(key, "hi")).status_code == 202

    bad = mia("apikey", "create", "--business", "x", "--scopes", "root", db=db)
    assert bad.returncode == 2 and "scopes" in bad.stderr and "Traceback" not in bad.stderr


def test_mia_devnet_deploys_and_prints_addresses(tmp_path):  # type: ignore[no-untyped-def]
    out = tmp_path / "devnet.json"
    r = subprocess.run([sys.executable, "-m", "app.cli", "devnet", "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    import json
    addresses = json.loads(out.read_text())
    for name in ("serv_token", "quote_token", "router", "treasury"):
        assert addresses[name] in r.stdout, name
    assert "SERV_TOKEN_ADDRESS=" in r.stdout
