"""The committed contracts/build must be exactly what the pinned compiler makes of the sources."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from chain import artifacts
from chain.artifacts import CONTRACTS_DIR
from tests.chain.conftest import require_contracts


def test_committed_build_matches_sources() -> None:
    require_contracts()
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: cannot recompile contracts")
    proc = subprocess.run(
        [node, "scripts/build.js", "--check"], cwd=CONTRACTS_DIR,
        capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout


def test_artifacts_say_which_compiler_made_them() -> None:
    pinned = json.loads((CONTRACTS_DIR / "package.json").read_text())["dependencies"]["solc"]
    for name in ("SERVToken", "DevUSD", "OwnerWallet"):
        data = json.loads((CONTRACTS_DIR / "build" / f"{name}.json").read_text())
        assert data["compiler"]["version"].startswith(pinned + "+commit")
        assert data["compiler"]["settings"]["evmVersion"] == "prague"
        assert data["bytecode"].startswith("0x60")


def test_gpl_artifacts_are_not_copied_into_the_repository() -> None:
    names = {p.name for p in (CONTRACTS_DIR / "build").iterdir()}
    for ext in ("UniswapV2Factory", "UniswapV2Pair", "UniswapV2Router02", "WETH9"):
        assert f"{ext}.json" not in names
    require_contracts()
    assert artifacts.load("UniswapV2Router02").compiler == "@uniswap/v2-periphery@1.1.0-beta.0"


def test_router_init_code_hash_matches_the_pair_bytecode() -> None:
    # UniswapV2Library.pairFor hardcodes keccak(pair creation code); a mismatch breaks every swap.
    from eth_utils import keccak

    require_contracts()
    pair_hash = keccak(hexstr=artifacts.load("UniswapV2Pair").bytecode).hex()
    assert pair_hash.removeprefix("0x") in artifacts.load("UniswapV2Router02").bytecode
