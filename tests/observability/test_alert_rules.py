"""deploy/prometheus/alerts.yml: valid rules, each with a `promtool test rules` unit test that
passes (Debian's prometheus package provides promtool; `make install` installs it as root)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is missing: `make install` installs Debian's prometheus "
                             "package when run as root (apt-get install prometheus)")


@needs_promtool
def test_the_rules_are_valid() -> None:
    run = subprocess.run([PROMTOOL, "check", "rules", "alerts.yml"], cwd=RULES,  # type: ignore[list-item]
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


@needs_promtool
def test_the_rule_unit_tests_pass() -> None:
    run = subprocess.run([PROMTOOL, "test", "rules", "alerts_test.yml"], cwd=RULES,  # type: ignore[list-item]
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


def test_every_alert_has_a_unit_test_that_sees_it_fire() -> None:
    rules = yaml.safe_load((RULES / "alerts.yml").read_text())
    names = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    tests = yaml.safe_load((RULES / "alerts_test.yml").read_text())["tests"]
    fired = {t["alertname"] for case in tests for t in case["alert_rule_test"] if t["exp_alerts"]}
    assert names == fired, f"no firing test for {sorted(names - fired)}"
    readme = (RULES.parents[1] / "README.md").read_text()
    missing = [n for n in names if not re.search(rf"\b{n}\b", readme)]
    assert not missing, f"README 'Operating MIA' does not say what to do about {missing}"
