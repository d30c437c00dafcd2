"""Headless Chromium for browser tests: Debian's system binary (installed by `make install`),
driven by Playwright. No browser is ever downloaded; without Chromium the test skips, saying why."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
# What works in a container as root with no network: no sandbox (no user namespaces), no GPU,
# and nothing that phones home (QUIC, component updates, sync, background fetches).
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"  # git-ignored


def require_chromium() -> None:
    """Skips only where Chromium cannot be installed; where it could be, a missing one fails."""
    if CHROMIUM.exists():
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        pytest.fail(f"no Chromium at {CHROMIUM}, but this machine can install it: run "
                    "`make install` (it apt-get installs Debian's chromium)")
    reason = (f"browser test skipped: no Chromium at {CHROMIUM}, and it cannot be installed "
              "here (`make install` installs Debian's chromium only as root with apt-get)")
    print(reason)
    pytest.skip(reason)


@contextlib.asynccontextmanager
async def chromium(**context: Any) -> AsyncIterator[Any]:
    """A fresh browser context (its own user-data-dir) with the given viewport options."""
    require_chromium()
    from playwright.async_api import async_playwright

    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch_persistent_context(
                profile, executable_path=str(CHROMIUM), headless=True, args=FLAGS, **context)
            try:
                yield browser
            finally:
                await browser.close()


class PageProblems:
    """Console errors, uncaught exceptions and requests to another origin, collected from a
    page: a Content-Security-Policy violation shows up here as a console error."""

    def __init__(self, page: Any, origin: str):
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(f"console: {m.text}")
                if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        page.on("request", lambda r: None if r.url.startswith((origin, "data:"))
                else self.errors.append(f"request to another origin: {r.url}"))


def artifact(name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name
