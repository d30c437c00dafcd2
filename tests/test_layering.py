"""Every dependency rule of ARCHITECTURE.md, read from the code's own imports (runtime imports:
those under `if TYPE_CHECKING:` only name types and are left out)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOMAINS = {"auth", "chat", "idle", "miners", "ops", "treasury", "runpod", "leases",
           "transparency", "accounts"}
# Modules every domain may use; they import no domain themselves.
INFRASTRUCTURE = {"app.config", "app.db", "app.queue", "app.notify", "app.ratelimit",
                  "app.ttlcache", "app.web", "app.errors", "app.schemas", "app.models",
                  "app.context", "app.chainlink", "app.localredis", "app.serving", "app.tokens"}
ENTRY_POINTS = {"app.main", "app.cli", "app.devrun"}  # where the whole app is assembled


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports(package: str) -> Iterator[tuple[str, str, int]]:
    """(importing module, imported module, line) for every runtime import under `package`."""
    for path in sorted((ROOT / package).rglob("*.py")):
        if "node_modules" in path.parts or "migrations" in path.parts:
            continue
        tree = ast.parse(path.read_text(), str(path))
        skip = _type_checking_lines(tree)
        me = _module(path)
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) in skip:
                continue
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield me, alias.name, node.lineno
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                yield me, node.module, node.lineno
                for alias in node.names:  # `from app.chat import service` imports app.chat.service
                    yield me, f"{node.module}.{alias.name}", node.lineno


def _top(name: str) -> str:
    return name.split(".")[0]


def _domain(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "app" and parts[1] in DOMAINS else None


def _broken(rule: str, found: list[str]) -> None:
    if found:
        pytest.fail(f"{rule}:\n  " + "\n  ".join(sorted(set(found))))


def test_chain_is_a_library_that_reads_no_environment() -> None:
    _broken("chain/ imports nothing from app/, jobs/, miner/ or Starlette",
            [f"{a}:{n} imports {b}" for a, b, n in imports("chain")
             if _top(b) in {"app", "jobs", "miner", "bench", "starlette"}])
    reads = []
    for path in (ROOT / "chain").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in {"environ", "getenv"}:
                reads.append(f"{_module(path)}:{node.lineno}")
    _broken("chain/ reads no environment (app/config.py does)", reads)


def test_only_config_reads_the_environment_in_app_and_jobs() -> None:
    reads = []
    for package in ("app", "jobs"):
        for path in (ROOT / package).rglob("*.py"):
            # devrun hands the environment on to the processes it starts, with dev defaults
            if "node_modules" in path.parts or _module(path) in {"app.config", "app.devrun"}:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Attribute) and node.attr in {"environ", "getenv"}:
                    reads.append(f"{_module(path)}:{node.lineno}")
    _broken("nothing but app/config.py reads os.environ", reads)


def test_dependencies_point_from_jobs_to_app_to_chain() -> None:
    _broken("app/ never imports jobs/ (it enqueues by name); only `mia worker` starts it",
            [f"{a}:{n} imports {b}" for a, b, n in imports("app")
             if _top(b) == "jobs" and a != "app.cli"])
    _broken("only app/ knows Starlette", [f"{a}:{n} imports {b}" for pkg in ("jobs", "chain")
                                          for a, b, n in imports(pkg) if _top(b) == "starlette"])


def test_the_miner_speaks_http_only() -> None:
    _broken("miner/ imports nothing of the server (it talks HTTP)",
            [f"{a}:{n} imports {b}" for a, b, n in imports("miner")
             if _top(b) in {"app", "jobs", "chain", "bench"}])


def test_infrastructure_imports_no_domain() -> None:
    _broken("app's shared modules (config, db, queue, context, ...) import no domain",
            [f"{a}:{n} imports {b}" for a, b, n in imports("app")
             if a in INFRASTRUCTURE and _domain(b)])


def test_only_the_app_assembly_imports_routes() -> None:
    _broken("routes are imported by app/main.py only (services never import routes; no domain "
            "reaches into another's routes)",
            [f"{a}:{n} imports {b}" for pkg in ("app", "jobs") for a, b, n in imports(pkg)
             if b.endswith(".routes") and _domain(b) and a not in ENTRY_POINTS
])


def test_miners_is_identity_only_and_leases_know_no_kind() -> None:
    _broken("no domain imports miners/ (registration and identity only)",
            [f"{a}:{n} imports {b}" for pkg in ("app", "jobs") for a, b, n in imports(pkg)
             if _domain(b) == "miners" and _domain(a) != "miners" and a not in ENTRY_POINTS])
    _broken("the lease protocol knows no job kind: chat/ and idle/ plug into it",
            [f"{a}:{n} imports {b}" for a, b, n in imports("app")
             if _domain(a) == "leases" and _domain(b) in {"chat", "idle", "treasury", "ops"}])


def test_accounts_know_no_job_kind() -> None:
    # The deposit watcher reads the treasury's address (treasury.onchain) and the summary's
    # totals; the treasury never imports accounts (the two-way rule below holds it to that).
    _broken("accounts (the ledger, billing) are called by the job paths, never the reverse",
            [f"{a}:{n} imports {b}" for a, b, n in imports("app")
             if _domain(a) == "accounts" and _domain(b) in {"chat", "idle", "leases"}])


def test_no_two_way_imports_between_domains() -> None:
    edges: dict[str, set[str]] = {}
    for a, b, _ in imports("app"):
        da, db = _domain(a), _domain(b)
        if da and db and da != db:
            edges.setdefault(da, set()).add(db)
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(edges.get(node, ())):
            if nxt in path:
                cycles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif len(path) < len(DOMAINS):
                visit(nxt, path + [nxt])

    for start in sorted(edges):
        visit(start, [start])
    _broken("domains depend on each other one way only (no cycles)", cycles)


def test_the_rules_see_real_imports() -> None:
    """The checks above would pass on nothing: make sure they read what is there."""
    found = {(a, b) for a, b, _ in imports("app")}
    assert ("app.chat.routes", "app.leases.endpoints") in found
    assert ("app.leases.protocol", "app.leases.rules") in found
    assert any(b == "app.chat.kind" for a, b in found)
