"""Measurement only: ``pytest -p tests.support.count_deploys ...`` prints how many devnets were
deployed (calls of chain.devnet.deploy_devnet) and how long they took in total.

Loaded as a plugin, before the conftests import ``deploy_devnet`` by name, so they get the
counting wrapper."""

from __future__ import annotations

import functools
import time
from typing import Any

import chain.devnet

_calls: list[float] = []
_deploy = chain.devnet.deploy_devnet


@functools.wraps(_deploy)
async def _counted(*args: Any, **kwargs: Any) -> Any:
    started = time.perf_counter()
    try:
        return await _deploy(*args, **kwargs)
    finally:
        _calls.append(time.perf_counter() - started)


chain.devnet.deploy_devnet = _counted  # type: ignore[assignment]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    terminalreporter.write_line(
        f"devnet deploys: {len(_calls)} taking {sum(_calls):.1f}s in all")
