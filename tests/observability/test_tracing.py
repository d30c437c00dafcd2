"""OpenTelemetry: off by default; on, one trace per chat job across the client's request, the
miner's lease and result, and the client's read of the answer (the job id, not a propagated
header, joins them), and one per buyback with its chain calls inside."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from app.observability import tracing
from tests.support.harness import running_app


@pytest.fixture
def spans():  # type: ignore[no-untyped-def]
    exporter = InMemorySpanExporter()
    yield exporter
    tracing.configure(None, "test")


async def test_tracing_is_off_unless_an_endpoint_is_set(api) -> None:  # type: ignore[no-untyped-def]
    assert not tracing.enabled()


async def test_one_trace_follows_a_chat_job(settings_factory, spans) -> None:  # type: ignore[no-untyped-def]
    async with running_app(settings_factory()) as api:
        tracing.configure(None, "mia-api", exporter=spans)
        key = await api.api_key()
        miner = await api.miner()
        created = (await api.chat(key, "trace me")).json()
        other = (await api.chat(key, "another job")).json()
        job = await miner.next_job()
        assert job["job_id"] == created["job_id"]  # type: ignore[index]
        assert (await miner.post_result(job, "traced")).status_code == 200  # type: ignore[arg-type]
        r = await api.client.get(f"/chat/{created['job_id']}", headers={"Authorization": f"Bearer {key}"})
        assert r.json()["response"] == "traced"
    mine = [s for s in spans.get_finished_spans()
            if s.attributes.get("mia.chat_id") == created["job_id"]]
    names = [s.name for s in mine]
    assert names == ["POST /chat", "leased", "result stored", "GET /chat/{job_id}"], names
    assert len({s.context.trace_id for s in mine}) == 1  # one trace, four requests
    theirs = [s for s in spans.get_finished_spans()
              if s.attributes.get("mia.chat_id") == other["job_id"]]
    assert theirs and theirs[0].context.trace_id != mine[0].context.trace_id
    assert all(s.resource.attributes["service.name"] == "mia-api" for s in mine)


async def test_a_buyback_run_is_a_trace_with_its_chain_calls(spans) -> None:  # type: ignore[no-untyped-def]
    from web3 import AsyncWeb3
    from web3.providers.eth_tester import AsyncEthereumTesterProvider

    from app.observability import instrument_web3, job_span
    tracing.configure(None, "mia-worker", exporter=spans)
    w3 = instrument_web3(AsyncWeb3(AsyncEthereumTesterProvider()))
    with job_span("buyback run", "buyback", 7):
        await w3.eth.block_number
        await w3.eth.chain_id
    await w3.eth.block_number  # outside a buyback: no span
    got = spans.get_finished_spans()
    run = [s for s in got if s.name == "buyback run"]
    calls = [s for s in got if s.name.startswith("rpc ")]
    assert len(run) == 1 and run[0].attributes["mia.buyback_id"] == "7"
    assert [s.name for s in calls] == ["rpc eth_blockNumber", "rpc eth_chainId"]
    assert all(s.parent.span_id == run[0].context.span_id for s in calls)
