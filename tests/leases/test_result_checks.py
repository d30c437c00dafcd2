"""A posted result's lease is checked before anything costly (issue 23, H2 and M3): a result for a
job that does not exist, or a lease that is not current, costs no signature check, no chain call
and no tokenizing; a bad signature from an EOA never reaches the chain; a contract wallet (known
from its sign-in) is asked through ERC-1271, gas-capped and within its rate."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from eth_abi import encode
from eth_account import Account

import app.leases.protocol as protocol
from chain import artifacts
from tests.support.harness import SimMiner, running_app
from tests.support.rpc_relay import running_relay

CHAIN_CALLS = {"eth_getCode", "eth_call"}


def junk_batch(m: SimMiner, n: int = 64, size: int = 3_600) -> dict[str, Any]:
    """A replayed batch: well-formed, signed by someone else, for jobs that do not exist."""
    stranger = SimMiner(m.client, Account.create())
    items = []
    for _ in range(n):
        job_id, output = str(uuid.uuid4()), "lorem ipsum dolor sit amet " * (size // 27)
        items.append({"job_id": job_id, "lease_id": str(uuid.uuid4()), "output": output,
                      "signature": stranger.sign_result(job_id, output)})
    return {"results": items}


def chain_calls(relay: Any) -> int:
    return sum(method in CHAIN_CALLS for method in relay.methods())


@dataclass
class ContractMiner(SimMiner):
    """A miner whose wallet is an OwnerWallet contract; the owner's key signs for it."""
    wallet: str = ""

    @property
    def address(self) -> str:
        return self.wallet


async def contract_miner(api: Any) -> ContractMiner:
    w3 = api.ctx.chain.w3
    owner = Account.create()
    deployer = (await w3.eth.accounts)[0]
    data = artifacts.load("OwnerWallet").bytecode + encode(["address"], [owner.address]).hex()
    tx = await w3.eth.send_transaction({"from": deployer, "data": data})
    wallet = (await w3.eth.wait_for_transaction_receipt(tx))["contractAddress"]
    m = ContractMiner(api.client, owner, wallet=wallet)
    await m.register()
    return m


async def test_junk_results_cost_no_chain_call_and_no_tokenizing(settings_factory, chain_node_url, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    counted: list[int] = []
    real_count = protocol.count_tokens

    async def counting(name: str, text: str) -> int:  # the real tokenizer, counted
        counted.append(len(text))
        return await real_count(name, text)

    monkeypatch.setattr(protocol, "count_tokens", counting)
    with running_relay(chain_node_url) as (rpc_url, relay):
        async with running_app(settings_factory(chain_rpc_url=rpc_url)) as api:
            key = await api.api_key()
            miner = await api.miner()
            relay.clear()
            body = junk_batch(miner)
            for _ in range(5):  # the audit sent 50 of these: 3,200 RPC calls
                r = await miner.client.post("/job/results", json=body, headers=miner.auth)
                assert r.status_code == 200
                assert {i["error"] for i in r.json()["results"]} == {"job_not_found"}
            assert chain_calls(relay) == 0 and counted == []

            # a real job, leased by this miner, with a bad signature: refused, still no RPC
            job_id = (await api.chat(key, "hi")).json()["job_id"]
            job = await miner.next_job(wait=2)
            assert job is not None and job["job_id"] == job_id
            other = SimMiner(miner.client, Account.create())
            bad = await miner.post_result(job, "an answer",
                                          signature=other.sign_result(job_id, "an answer"))
            assert bad.status_code == 401 and bad.json()["error"] == "invalid_result_signature"
            assert chain_calls(relay) == 0 and counted == []
            # the stale lease of a job (not this lease): no signature check, no tokenizing
            stale = await miner.post_result({**job, "lease_id": str(uuid.uuid4())}, "x",
                                            signature=other.sign_result(job_id, "x"))
            assert stale.status_code == 409 and stale.json()["error"] == "lease_not_current"
            assert counted == []
            ok = await miner.post_result(job, "an answer")
            assert ok.status_code == 200 and counted == [len("an answer")]
            # a repeat of the accepted result answers the same, without a second count
            again = await miner.post_result(job, "an answer")
            assert again.status_code == 200 and again.json() == ok.json()
            assert counted == [len("an answer")] and chain_calls(relay) == 0


async def test_a_contract_wallet_is_checked_through_its_contract_gas_capped_and_rate_limited(settings_factory, chain_node_url) -> None:  # type: ignore[no-untyped-def]
    with running_relay(chain_node_url) as (rpc_url, relay):
        settings = settings_factory(chain_rpc_url=rpc_url, erc1271_checks_per_min=2,
                                    erc1271_gas_limit=150_000)
        async with running_app(settings) as api:
            key = await api.api_key()
            miner = await contract_miner(api)
            relay.clear()
            # its junk costs no chain call either: the leases are checked first
            r = await miner.client.post("/job/results", json=junk_batch(miner, 16),
                                        headers=miner.auth)
            assert r.status_code == 200 and chain_calls(relay) == 0
            jobs = []
            for text in ("one", "two", "three"):
                await api.chat(key, text)
                job = await miner.next_job(wait=2)
                assert job is not None
                jobs.append(job)
            assert (await miner.post_result(jobs[0], "answer one")).status_code == 200
            calls = [r for r in relay.requests if r.get("method") == "eth_call"]
            assert len(calls) == 1 and int(calls[0]["params"][0]["gas"], 16) == 150_000
            assert "eth_getCode" not in relay.methods()  # known from the sign-in
            forged = SimMiner(miner.client, Account.create())
            bad = await miner.post_result(jobs[1], "x", signature=forged.sign_result(
                jobs[1]["job_id"], "x"))
            assert bad.status_code == 401 and bad.json()["error"] == "invalid_result_signature"
            limited = await miner.post_result(jobs[2], "answer three")
            assert limited.status_code == 429
            assert limited.json()["error"] == "too_many_signature_checks"
            assert len([m for m in relay.methods() if m == "eth_call"]) == 2
