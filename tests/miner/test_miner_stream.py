"""Model declaration, a job's sampling, and streamed jobs' chunks, against the protocol-faithful
backend of tests/miner/batch_server.py (it checks leases, seqs and signatures the way the
contract says) and the demo model, both over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
import statistics
import time

import pytest

from miner.chunks import ChunkPoster
from miner.client import BackendClient
from miner.demo_model import DemoState, create_demo_app
from miner.wallet import Wallet
from tests.miner.support import RunningMiner, UvicornThread, new_key
from tests.miner.test_miner_e2e import until

STREAM = {"model": "mia-demo", "stream": True}


def done(server, job_id: str) -> bool:  # type: ignore[no-untyped-def]
    return server.jobs[job_id].status == "completed"


# ---- the model declaration -------------------------------------------------------------------

@pytest.mark.parametrize("batch", ["auto", "off"])
async def test_chat_polls_declare_the_model_idle_polls_do_not(server, demo_model, batch) -> None:
    ours = server.add_job("for the demo model", extra={"model": "mia-demo"})
    plain = server.add_job("for any model")
    theirs = server.add_job("for another model", extra={"model": "llama3:70b"})
    idle = server.add_job("an idle job", kind="idle")
    async with RunningMiner(server.url, demo_model.url, batch=batch, accept_idle=True) as m:
        await until(lambda: all(done(server, j) for j in (ours, plain, idle)))
        assert m.miner.declared_model == "mia-demo"  # learnt from the model server's /v1/models
    assert server.jobs[theirs].status == "queued"
    chat = [model for path, model in server.polls if path.startswith("/job/")]
    idle_polls = [model for path, model in server.polls if path.startswith("/idle-job/")]
    assert chat and set(chat) == {"mia-demo"}
    assert idle_polls and set(idle_polls) == {None}


async def test_the_configured_model_name_is_the_one_declared(server, caplog) -> None:
    # Ollama lists "name:latest"; the operator configured "name": the configuration wins.
    state = DemoState(model="acme/mixtral-8x7b:latest")
    with UvicornThread(factory=lambda: create_demo_app(state)) as srv:
        job = server.add_job("hello", extra={"model": "acme/mixtral-8x7b"})
        async with RunningMiner(server.url, srv.url, model="acme/mixtral-8x7b"):
            await until(lambda: done(server, job))
        assert {model for path, model in server.polls if path.startswith("/job/")} == {
            "acme/mixtral-8x7b"}

    # A name the backend would refuse in model= is not declared: untargeted jobs only.
    caplog.set_level(logging.WARNING, logger="miner")
    server.polls.clear()
    state = DemoState(model="my model (q4)")
    with UvicornThread(factory=lambda: create_demo_app(state)) as srv:
        job = server.add_job("hello again")
        async with RunningMiner(server.url, srv.url) as m:
            await until(lambda: done(server, job))
        assert m.miner.declared_model is None and "cannot be declared" in caplog.text
        assert {model for _, model in server.polls} == {None}


async def test_a_jobs_sampling_reaches_the_model_server(server, demo_model) -> None:
    job = server.add_job("hi", extra={"max_tokens": 7, "temperature": 0.1, "top_p": 0.9,
                                      "stop": ["zzz"], "stream": False, "model": None})
    async with RunningMiner(server.url, demo_model.url, max_tokens=5) as m:
        await until(lambda: done(server, job))
        sent = demo_model.control()["last_request"]
        # the job's max_tokens within the miner's own cap (5); its sampling as asked
        assert (sent["max_tokens"], sent["temperature"], sent["top_p"], sent["stop"]) == (
            5, 0.1, 0.9, ["zzz"])
        assert len(server.jobs[job].output.split()) == 5
        assert server.jobs[job].chunks == []  # stream false: no chunks
        # a backend that sends none of the new fields: the miner's defaults, not streamed
        old = server.add_job("hello")
        await until(lambda: done(server, old))
        sent = demo_model.control()["last_request"]
        assert sent["temperature"] == 0 and sent["stream"] is False
        assert "top_p" not in sent and "stop" not in sent
    assert m.miner.stats.streamed == 0


# ---- streamed jobs -----------------------------------------------------------------------------

async def test_a_streamed_job_posts_coalesced_chunks_before_its_result(server, demo_model,
                                                                       caplog) -> None:
    caplog.set_level(logging.INFO, logger="miner")
    # 200 words, one every 10 ms: about 2 s of generation.
    job_id = server.add_job("tell me [demo:words=200] [demo:word_delay=0.01]", extra=STREAM)
    async with RunningMiner(server.url, demo_model.url, max_tokens=1000) as m:
        await until(lambda: done(server, job_id))
    job = server.jobs[job_id]
    assert job.streamed == job.output and len(job.output.split()) == 200
    # the deltas reached the backend while the answer was generated, not with the result
    assert job.chunk_times[0] < job.completed_at - 1.0
    assert job.chunk_times[len(job.chunks) // 2] < job.completed_at - 0.5
    # coalesced: about one post per 50 ms (2 s / 50 ms = 40), not one per word (200)
    posts = len(job.chunks)
    assert 10 <= posts <= 60, posts
    gaps = [b - a for a, b in zip(job.chunk_times, job.chunk_times[1:])]
    assert statistics.median(gaps) >= 0.04
    assert m.miner.stats.streamed == 1 and m.miner.stats.chunk_posts == posts
    assert f"job {job_id} kind=chat status=completed tokens=200" in caplog.text
    assert f"chunks={posts}" in caplog.text
    print(f"200 words at 10 ms a word: {posts} chunk posts")


async def test_an_instant_answer_goes_in_a_few_chunks(server, demo_model) -> None:
    job_id = server.add_job("tell me [demo:words=200]", extra=STREAM)
    async with RunningMiner(server.url, demo_model.url, max_tokens=1000):
        await until(lambda: done(server, job_id))
    job = server.jobs[job_id]
    # the first word at once, then the rest in as few posts as the 512-character rule allows
    assert job.streamed == job.output and len(job.chunks) <= 4, job.chunks
    print(f"200 words at once: {len(job.chunks)} chunk posts")


async def test_failed_and_unanswered_chunk_posts_never_fail_the_job(server, demo_model) -> None:
    server.fail_chunks = 3  # refused: retried with backoff
    server.unacked_chunks = 2  # stored, but the answer is lost: the retry is a duplicate
    job_id = server.add_job("x [demo:words=80] [demo:word_delay=0.02]", extra=STREAM)
    async with RunningMiner(server.url, demo_model.url) as m:
        await until(lambda: done(server, job_id))
    job = server.jobs[job_id]
    assert job.streamed == job.output  # nothing lost, nothing doubled
    assert (m.miner.stats.completed, m.miner.stats.released, m.miner.stats.lost) == (1, 0, 0)
    assert server.fail_chunks == server.unacked_chunks == 0


async def test_a_chunk_gap_resends_from_where_the_backend_is(server, demo_model, caplog) -> None:
    caplog.set_level(logging.INFO, logger="miner")
    job_id = server.add_job("x [demo:words=80] [demo:word_delay=0.01]", extra=STREAM)
    server.jobs[job_id].forget_chunks_from = 2
    async with RunningMiner(server.url, demo_model.url):
        await until(lambda: done(server, job_id))
    job = server.jobs[job_id]
    assert job.forget_chunks_from is None  # the gap happened
    assert job.streamed == job.output
    assert "resending the stream from chunk 2" in caplog.text


async def test_nobody_watching_stops_the_chunks_not_the_result(server, demo_model) -> None:
    # 200 words, 10 ms each: chunks stop about 1 s (UNWATCHED_GRACE) after the first "no"
    job_id = server.add_job("x [demo:words=200] [demo:word_delay=0.01]", extra=STREAM)
    server.jobs[job_id].watching = False
    async with RunningMiner(server.url, demo_model.url, max_tokens=1000) as m:
        await until(lambda: done(server, job_id))
    job = server.jobs[job_id]
    assert job.output.startswith(job.streamed) and len(job.streamed) < len(job.output) / 1.5
    assert len(job.output.split()) == 200 and m.miner.stats.completed == 1
    assert job.chunk_times[-1] - job.chunk_times[0] < 1.5


async def test_a_client_that_starts_reading_late_gets_the_whole_stream(server, demo_model) -> None:
    # A /v1 client's stream may mark itself as reading just after the miner's first chunk.
    job_id = server.add_job("x [demo:words=100] [demo:word_delay=0.01]", extra=STREAM)
    job = server.jobs[job_id]
    job.watching = False
    async with RunningMiner(server.url, demo_model.url, max_tokens=1000):
        await until(lambda: job.chunks, step=0.005)
        await asyncio.sleep(0.3)
        job.watching = True
        await until(lambda: done(server, job_id))
    assert job.streamed == job.output


async def test_a_lease_lost_on_a_chunk_post_stops_the_generation(server, demo_model,
                                                                 caplog) -> None:
    caplog.set_level(logging.INFO, logger="miner")
    job_id = server.add_job("x [demo:words=300] [demo:word_delay=0.02]", extra=STREAM,
                            steal_first_lease=True)  # 6 s of generation if it went on
    t0 = time.monotonic()
    async with RunningMiner(server.url, demo_model.url) as m:
        await until(lambda: m.miner.stats.lost == 1, timeout=10)
        lost_after = time.monotonic() - t0
        await until(lambda: demo_model.state.in_flight == 0, timeout=5)  # the stream was closed
    assert lost_after < 3  # at the first chunk, not at the next lease extension (15 s)
    assert server.posted[job_id] == 0 and server.jobs[job_id].chunks == []
    assert f"job {job_id} kind=chat status=lost" in caplog.text


async def test_a_slow_chunk_endpoint_does_not_slow_the_generation(server, demo_model) -> None:
    server.chunk_delay = 0.5  # every chunk post takes half a second
    job_id = server.add_job("x [demo:words=200] [demo:word_delay=0.01]", extra=STREAM)
    async with RunningMiner(server.url, demo_model.url, max_tokens=1000):
        t0 = time.monotonic()
        await until(lambda: done(server, job_id))
        took = time.monotonic() - t0
    job = server.jobs[job_id]
    assert job.streamed == job.output
    # 2 s of generation, then at most one post in flight and the last one (0.5 s each); a
    # miner posting from its generation loop would have taken far longer
    assert took < 4.5, took
    assert len(job.chunks) <= 7  # one post in flight at a time: the chunks grow instead
    print(f"0.5 s per chunk post: {len(job.chunks)} chunk posts, job done in {took:.2f} s")


# ---- the coalescing rule on its own ----------------------------------------------------------

async def test_chunk_poster_first_at_once_then_by_interval_or_size(server) -> None:
    job_id = server.add_job("hi", extra=STREAM)
    client = BackendClient(server.url, Wallet.from_private_key(new_key()))
    try:
        lease = await client.next_job("chat", 1, "mia-demo")
        assert lease is not None and lease.job["stream"] is True
        job = server.jobs[job_id]
        lost = asyncio.Event()
        poster = ChunkPoster(client, lease, lost, interval=1.0, eager_chars=500)
        t0 = time.monotonic()
        poster.add("a")
        await until(lambda: len(job.chunks) == 1, timeout=2, step=0.005)
        assert time.monotonic() - t0 < 0.5  # the first delta at once
        poster.add("b")
        poster.add("c")
        await asyncio.sleep(0.3)
        assert len(job.chunks) == 1  # within the interval: waiting
        poster.add("x" * 500)  # enough characters: no need to wait for the interval
        await until(lambda: len(job.chunks) == 2, timeout=2, step=0.005)
        assert time.monotonic() - t0 < 0.9
        assert job.chunks == ["a", "bc" + "x" * 500]
        poster.add("d")
        poster.add("e")
        t1 = time.monotonic()
        await poster.finish(timeout=5)  # the rest at once, without the interval
        assert time.monotonic() - t1 < 0.5
        assert job.chunks == ["a", "bc" + "x" * 500, "de"] and poster.posts == 3

        # a delta longer than one post may carry is split, in order
        job2 = server.add_job("again", extra=STREAM)
        lease2 = await client.next_job("chat", 1, "mia-demo")
        poster2 = ChunkPoster(client, lease2, lost, max_chars=10)
        poster2.add("0123456789abcdefghij" + "XYZ")
        await poster2.finish(timeout=5)
        assert server.jobs[job2].chunks == ["0123456789", "abcdefghij", "XYZ"]
        assert not lost.is_set()
    finally:
        await client.aclose()
