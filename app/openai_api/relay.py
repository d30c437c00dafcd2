"""Follows one chat job for a client's stream: the deltas a miner posts, then the end.

The text comes from the job's relay buffer in Redis (app/relay.py), read from where the last read
stopped each time the notifier says a chunk came (app/notify.py Watch). The job's row is read when
the notifier says its state changed (completed, failed, put back in the queue), and every
STATE_CHECK_S in case a message was lost. What the stream may say:

- Delta: text to send, in order;
- Finished: the job completed; `rest` is the signed answer's text not streamed yet (all of it
  if the miner streamed nothing);
- Broken: the stream cannot go on truthfully, with an OpenAI-style code: `miner_lost` (the miner
  that was streaming lost its lease, the job was redelivered: what was sent cannot be taken back),
  `stream_mismatch` (the signed answer does not begin with what was streamed), `job_failed`, or
  `timeout` (OPENAI_MAX_WAIT_S passed). The job itself goes on: GET /chat/{job_id} has its end;
- None: nothing new for a while; the caller sends a keep-alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio

from app.auth.principals import Client
from app.chat import service
from app.context import AppContext
from app.models import ChatJob, JobStatus
from app.relay import READ_AT_MOST

STATE_CHECK_S = 5.0  # the job's row is also read this often, in case a wake-up was lost
KEEPALIVE_S = 15.0  # the longest silence on a stream (proxies close idle connections)
MARK_EVERY_S = 10.0  # refreshes the "a client is watching" mark (app/relay.py WATCH_TTL_S)


@dataclass(frozen=True)
class Delta:
    text: str


@dataclass(frozen=True)
class Finished:
    job: ChatJob
    rest: str


@dataclass(frozen=True)
class Broken:
    code: str
    message: str


Event = Delta | Finished | Broken | None


async def follow(c: AppContext, client: Client, job_id: str, wait_s: float, *,
                 deltas: bool = True) -> AsyncIterator[Event]:
    """With deltas=False, only the end: chunks a miner posts are not read (an answer vetted
    whole before anyone sees it)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    offset, lease, sent = 0, None, Sent()
    next_state = loop.time() + STATE_CHECK_S
    next_mark = 0.0
    quiet_since = loop.time()
    with c.notifier.watch(job_id) as watch:
        try:
            while True:
                watch.any.clear()  # before reading, so a wake-up during the reads is kept
                state_changed = watch.state.is_set()
                watch.state.clear()
                watch.chunk.clear()
                now = loop.time()
                if now >= next_mark:
                    await c.relay.mark_watched(job_id)
                    next_mark = now + MARK_EVERY_S
                entries = await c.relay.read(job_id, offset) if deltas else ()
                for entry in entries:
                    offset += 1
                    lease = lease or entry.lease_id
                    if entry.lease_id != lease:
                        yield _lost(job_id)
                        return
                    sent.add(entry.text)
                    quiet_since = now
                    yield Delta(entry.text)
                if state_changed or now >= next_state:
                    next_state = now + STATE_CHECK_S
                    job = await service.get_owned(c, client, job_id)
                    if job.status in service.TERMINAL:
                        yield await _end(c, job, lease, sent)
                        return
                    if lease is not None and (job.status != JobStatus.assigned
                                              or job.lease_id != lease):
                        yield _lost(job_id)
                        return
                if now >= deadline:
                    yield Broken("timeout", f"no answer within {wait_s:.0f} s (OPENAI_MAX_WAIT_S); "
                                            f"the job goes on: GET /chat/{job_id}")
                    return
                if now - quiet_since >= KEEPALIVE_S:
                    quiet_since = now
                    yield None
                if len(entries) >= READ_AT_MOST:
                    continue  # a full slice: the buffer may hold more already
                timeout = min(next_state, deadline, quiet_since + KEEPALIVE_S) - now
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(watch.any.wait(), max(timeout, 0.0))
        finally:
            # a client that hung up cancels this generator, and every await in a cancelled
            # scope is cancelled again: the mark is cleared under a shield
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await c.relay.unmark_watched(job_id)


class Sent:
    """What a stream has sent, kept as its length and a running SHA-256, never as the text:
    enough to check the signed answer against it, in constant memory (a slowly read stream
    kept all of it and took an API process from 395 to 610 MB)."""

    def __init__(self) -> None:
        self.length = 0  # characters
        self._hash = hashlib.sha256()

    def add(self, text: str) -> None:
        self.length += len(text)
        self._hash.update(text.encode())

    def rest_of(self, answer: str) -> str | None:
        """The part of `answer` not sent yet if it begins with what was sent, else None."""
        if len(answer) < self.length:
            return None
        if hashlib.sha256(answer[:self.length].encode()).digest() != self._hash.digest():
            return None
        return answer[self.length:]


async def _end(c: AppContext, job: ChatJob, lease: str | None, sent: Sent) -> Event:
    if job.status == JobStatus.failed:
        return Broken("job_failed", f"the network could not answer: {job.failure_reason}")
    if lease is not None and job.lease_id != lease:  # another miner's answer, after a redelivery
        return _lost(job.id)
    # chunks posted just before the result, not read yet, are in the answer: no need for them
    rest = sent.rest_of(job.response or "")
    if rest is None:
        return Broken("stream_mismatch", "the miner's signed answer differs from what it "
                                         f"streamed; the answer is at GET /chat/{job.id}")
    with contextlib.suppress(Exception):
        await c.relay.forget(job.id)
    return Finished(job=job, rest=rest)


def _lost(job_id: str) -> Broken:
    return Broken("miner_lost", "the miner streaming this answer stopped, and what was sent "
                                "cannot be taken back, so this stream ends here; the job goes "
                                f"back to the queue: GET /chat/{job_id} shows how it ends "
                                "(another miner's answer, or why it failed)")

