"""chain/ is a library: it imports nothing from app/ or jobs/ and reads no environment."""

from __future__ import annotations

import ast
from pathlib import Path

CHAIN = Path(__file__).resolve().parents[2] / "chain"


def test_chain_imports_no_app_or_jobs_and_reads_no_environment() -> None:
    for path in CHAIN.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                names = []
            for name in names:
                assert name.split(".")[0] not in {"app", "jobs", "starlette"}, f"{path}: imports {name}"
            if isinstance(node, ast.Attribute) and node.attr in {"environ", "getenv"}:
                raise AssertionError(f"{path}:{node.lineno} reads the environment")
