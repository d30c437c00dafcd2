"""The trust bench (bench/trust.py, issue 18): a small run end to end, and the bar it holds a run
to. The figures themselves come from `make bench` (bench/README.md)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from bench import trust
from bench.system import Spec
from miner.demo_model import DemoState, respond
from miner.prompt import build_messages

pytestmark = pytest.mark.timeout(240)


def test_a_small_trust_run_suspends_its_cheater_and_no_honest_wallet() -> None:
    """Nine honest wallets and one that answers canned text, on SQLite: the cheater is suspended
    and never reaches a business; every honest wallet keeps its standing and credit; every answer
    a business saw is the honest one (the clients compute it themselves)."""
    plan = trust.TrustPlan(honest=9, cheaters=["canned"], clients=4, duration_s=6, max_s=6,
                           warmup_s=1, canaries=4, settle_s=10,
                           spec=Spec(database="sqlite", api_procs=1, env=dict(trust.TRUST_ENV)))
    r = trust.execute(plan)
    assert r["wallets"] == 10 and r["cheating_share"] == 0.1
    assert r["canaries"] == {"asked": 4, "added": 4, "error": None}
    assert r["public_record_unavailable"] == []
    assert r["answers_seen"] > 0 and r["wrong_answers_not_from_a_cheater"] == 0
    (cheater,) = r["cheaters"]
    assert cheater["kind"] == "canned" and cheater["suspended"], cheater
    assert cheater["suspended_reason"] and cheater["checks"]["failed"] >= 1
    assert cheater["answers_businesses_saw"] == 0 == r["cheater_answers_seen"]  # probation
    assert r["honest_penalised"] == [] and r["honest_checks"]["failed"] == 0
    assert r["honest_checks"]["passed"] > 0
    inf = r["inference"]
    assert inf["words_total"] > inf["words_business"] > 0 and 0 < inf["check_share"] < 1
    assert r["audit"]["lost"] == 0 and r["audit"]["duplicated"] == 0
    assert "cheater canned" in trust.table(r)
    # what stays: the bar (a run this small spends most of its inference on probation's shadow
    # work, so the cost bound is all it misses)
    assert [p for p in trust.problems(r) if not p.startswith("checks cost")] == []


def _passing() -> dict[str, Any]:
    return {
        "public_record_unavailable": [], "answers_seen": 1000, "cheater_answers_seen": 3,
        "cheater_share": 0.003, "wrong_answers_not_from_a_cheater": 0,
        "cheaters": [{"kind": k, "address": f"0x{i}", "suspended": True, "jobs_served": 2}
                     for i, k in enumerate(("canned", "truncate", "other-model", "copy"))],
        "honest_penalised": [], "inference": {"check_share": 0.07},
        "audit": {"lost": 0, "duplicated": 0, "failed_without_reason": 0},
    }


def test_the_bar_of_issue_18() -> None:
    assert trust.problems(_passing()) == []
    r = _passing()
    r["cheaters"][3]["suspended"] = False
    assert trust.problems(r) == ["cheater copy 0x3 was not suspended (2 jobs served)"]
    r = _passing() | {"cheater_answers_seen": 11, "cheater_share": 0.011}
    assert "businesses saw 11 cheaters' answers of 1000" in trust.problems(r)[0]
    r = _passing() | {"honest_penalised": [{"address": "0xh", "why": ["suspended (x)"]}]}
    assert trust.problems(r) == ["honest wallet 0xh penalised: suspended (x)"]
    r = _passing() | {"inference": {"check_share": 0.101}}
    assert trust.problems(r)[0].startswith("checks cost 0.101")
    r = _passing() | {"public_record_unavailable": ["HTTP 404"]}
    assert "unavailable" in trust.problems(r)[0]


def test_honest_wallets_are_penalised_for_a_failed_check_or_missing_credit() -> None:
    base = {"answers": {}, "words": 10, "errors": {}, "leased": 2, "accepted": 2,
            "rejected": {}, "suspended_at": None, "first_lease_at": None}
    records = [dict(base, address="0xa", cheat=None), dict(base, address="0xb", cheat=None),
               dict(base, address="0xc", cheat=None)]
    public = {"0xa": {"checks": {"passed": 3, "failed": 0}, "jobs_done": 2, "suspended": False},
              "0xb": {"checks": {"passed": 3, "failed": 1}, "jobs_done": 2, "suspended": False},
              "0xc": {"checks": {"passed": 3, "failed": 0}, "jobs_done": 1, "suspended": True,
                      "suspended_reason": "x"}}
    plan = trust.TrustPlan(spec=Spec(database="sqlite"))
    r = trust.report(plan, copy.deepcopy(records), [], public, {"asked": 0, "added": 0},
                     {"lost": 0, "duplicated": 0, "failed_without_reason": 0}, {})
    assert [p["address"] for p in r["honest_penalised"]] == ["0xb", "0xc"]
    assert r["honest_penalised"][1]["why"] == ["suspended (x)", "credited 1 of 2 jobs served"]


def test_the_clients_expected_answer_is_what_an_honest_miner_gives() -> None:
    """The business's own check: from what it sent and saw, the answer an honest demo miner
    gives the lease (context, history, prompt)."""
    history = [{"role": "user", "content": "Hi [demo:words=30]"},
               {"role": "assistant", "content": "Hello"}]
    job = {"prompt": "Where is my parcel? [demo:words=60]", "context": trust.CONTEXTS[0],
           "history": history}
    honest, _, _ = respond(DemoState(), build_messages(job), trust.MAX_TOKENS)
    assert trust.expected_answer(job["prompt"], trust.CONTEXTS[0], history) == honest
    assert len(honest.split()) == 60
    assert trust.expected_answer(job["prompt"], trust.CONTEXTS[1], history) != honest


def test_a_tenth_of_the_wallets_cheat_one_kind_each_in_turn() -> None:
    class Args:
        miners, db, postgres_url, api_procs = 40, "sqlite", "", 1
        clients = duration = warmup = rate = think = batch_max = cheat_after = trusted = None

    plan = trust.plan_from(Args())
    assert plan.honest == 36 and plan.cheaters == ["canned", "truncate", "other-model", "copy"]
    mix = trust.wallet_mix(plan)
    assert len(mix) == 40 and sorted(c for c in mix if c) == sorted(plan.cheaters)
    assert mix[0] is None  # the cheaters are spread among the honest wallets


def test_a_wallets_record_crosses_the_pipe_as_plain_json() -> None:
    rec = trust.WalletRecord("0xa", "copy")
    rec.rejected["miner_suspended"] += 3
    rec.errors["lease 503 busy"] += 1
    sent = rec.as_dict()
    assert sent["rejected"] == {"miner_suspended": 3} and sent["errors"] == {"lease 503 busy": 1}
    trust.dumps(sent)
