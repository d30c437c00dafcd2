"""With ENV=production, `mia serve` and `mia worker` refuse development settings, one line each;
FORWARDED_ALLOW_IPS=* is refused whatever ENV says. Run as the real command."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from app.config import Settings
from app.localredis import free_port

GOOD = {"ENV": "production", "PUBLIC_URL": "https://api.example.com", "CHAIN_ID": "8453"}


def mia(command: str, cwd, **env: str) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    base = {k: v for k, v in os.environ.items()
            if k not in ("ENV", "PUBLIC_URL", "CHAIN_ID", "FORWARDED_ALLOW_IPS")}
    # A free port and a database nobody uses: if the command did start, it would not return
    # and the timeout fails the test.
    base.update(PORT=str(free_port()), DATABASE_URL=f"sqlite+aiosqlite:///{cwd}/x.db", **env)
    return subprocess.run([sys.executable, "-m", "app.cli", command], env=base, cwd=cwd,
                          capture_output=True, text=True, timeout=20)


@pytest.mark.parametrize("command", ["serve", "worker"])
@pytest.mark.parametrize(("change", "reason"), [
    ({"PUBLIC_URL": ""}, "PUBLIC_URL is not set"),
    ({"CHAIN_ID": "31337"}, "CHAIN_ID=31337 is a development chain"),
    ({"FORWARDED_ALLOW_IPS": "*"}, "FORWARDED_ALLOW_IPS: '*' would let any caller pick"),
])
def test_production_refuses_dev_settings(command: str, change: dict[str, str], reason: str,
                                         tmp_path) -> None:  # type: ignore[no-untyped-def]
    r = mia(command, tmp_path, **{**GOOD, **change})
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"mia {command}: ") and reason in lines[0]
    assert "Traceback" not in r.stderr


def test_every_reason_is_given_at_once(tmp_path) -> None:  # type: ignore[no-untyped-def]
    r = mia("serve", tmp_path, ENV="production")
    assert r.returncode == 2
    assert [line.split(": ", 2)[2].split(" ")[0] for line in r.stderr.splitlines()] == [
        "PUBLIC_URL", "CHAIN_ID=31337"]


def test_development_keeps_its_defaults_and_production_accepts_real_settings() -> None:
    assert Settings(_env_file=None).env == "development"  # type: ignore[call-arg]
    assert Settings(_env_file=None, **{k.lower(): v for k, v in GOOD.items()}  # type: ignore[arg-type]
                    ).production_problems() == []
