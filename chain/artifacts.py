"""Contract ABI and bytecode: ours from contracts/build, Uniswap V2 and WETH9 from node_modules.

Uniswap V2 and WETH9 are GPL-3.0; they are read from the installed npm packages and checked
against the sha256 recorded in contracts/build/external.json, never copied into the repository.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from chain.errors import ArtifactsMissing

CONTRACTS_DIR = Path(__file__).resolve().parent.parent / "contracts"
INSTALL_HINT = "run `make install` (it runs `cd contracts && npm ci`)"


@dataclass(frozen=True)
class Artifact:
    name: str
    abi: list[dict[str, Any]]
    bytecode: str
    compiler: str | None = None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactsMissing(f"{path} not found: {INSTALL_HINT}") from None


@lru_cache(maxsize=None)
def load(name: str, contracts_dir: Path = CONTRACTS_DIR) -> Artifact:
    """Load a contract by name: SERVToken, DevUSD, OwnerWallet, UniswapV2Factory,
    UniswapV2Pair, UniswapV2Router02, WETH9, or an ABI-only ERC20."""
    if name == "ERC20":
        return Artifact("ERC20", _read_json(contracts_dir / "build" / "SERVToken.json")["abi"], "0x")
    external = _read_json(contracts_dir / "build" / "external.json")["contracts"]
    if name in external:
        ext = external[name]
        path = contracts_dir / "node_modules" / ext["package"] / ext["file"]
        if not path.exists():
            raise ArtifactsMissing(f"{name}: {path} not found: {INSTALL_HINT}")
        data = _read_json(path)
        bytecode = data.get("bytecode") or data["evm"]["bytecode"]["object"]
        if not bytecode.startswith("0x"):
            bytecode = "0x" + bytecode
        digest = hashlib.sha256(bytecode.lower().encode()).hexdigest()
        if digest != ext["bytecodeSha256"]:
            raise ArtifactsMissing(
                f"{name} in node_modules does not match contracts/build/external.json "
                f"({ext['package']}@{ext['version']} expected): {INSTALL_HINT}"
            )
        return Artifact(name, data["abi"], bytecode, f"{ext['package']}@{ext['version']}")
    data = _read_json(contracts_dir / "build" / f"{name}.json")
    return Artifact(name, data["abi"], data["bytecode"], data["compiler"]["version"])


def abi(name: str) -> list[dict[str, Any]]:
    return load(name).abi
