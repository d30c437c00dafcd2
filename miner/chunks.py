"""A streamed chat job's output, posted to the backend in chunks while the model generates.

The generation loop only calls `add()`, which appends to a buffer and returns: one sender task
per job does the HTTP. Its first chunk goes at once (time to first token); after that it posts
at most once per `interval`, sooner when `eager_chars` are waiting, always everything that is
waiting (up to MAX_CHUNK_CHARS a post). One post is in flight at a time, so when the backend
is slow the chunks just grow. When the backend has answered `watching: false` (no client reads
the stream) for UNWATCHED_GRACE, the chunks stop. Chunks are best effort: a failed post is
retried with backoff (the same seq and text, so a post that did arrive is ignored as a
duplicate) while generation goes on, and nothing here fails the job. The final result, posted
as for any job, is what counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from miner.backoff import Backoff
from miner.client import (
    MAX_CHUNK_CHARS,
    BackendClient,
    BackendError,
    BackendUnavailable,
    ChunkGap,
    Lease,
    LeaseLost,
)

log = logging.getLogger("miner.chunks")

# The shortest time between two chunk posts of one job (seconds): a 20 Hz stream looks live to
# a reader and costs the backend at most 20 requests a second per streamed job.
CHUNK_INTERVAL = 0.05
# Characters waiting that make the next post go before the interval is over.
EAGER_CHARS = 512
# Backoff between failed chunk posts (seconds): short, as a stream is read live; a Retry-After
# from the backend is waited for in any case (up to the cap).
CHUNK_BACKOFF_BASE = 0.05
CHUNK_BACKOFF_CAP = 2.0
# Chunks stop once the backend has said nobody watches for this long (seconds), not at its first
# "no": a client's stream may begin reading a moment after the job was leased and its first
# chunk posted.
UNWATCHED_GRACE = 1.0


class ChunkPoster:
    def __init__(
        self,
        backend: BackendClient,
        lease: Lease,
        lost: asyncio.Event,
        *,
        interval: float = CHUNK_INTERVAL,
        eager_chars: int = EAGER_CHARS,
        max_chars: int = MAX_CHUNK_CHARS,
        backoff_cap: float = CHUNK_BACKOFF_CAP,
        unwatched_grace: float = UNWATCHED_GRACE,
    ) -> None:
        self.backend = backend
        self.lease = lease
        self.lost = lost  # set when a chunk post says the lease is gone, as the lease keeper does
        self.interval = interval
        self.eager_chars = eager_chars
        self.max_chars = max_chars
        self.backoff_cap = backoff_cap
        self.unwatched_grace = unwatched_grace
        self.posts = 0  # chunk posts the backend accepted
        self.failed_posts = 0
        self.stopped: str | None = None  # why chunks stopped before the end, if they did
        self._pending: list[str] = []
        self._pending_chars = 0
        self._sent: list[str] = []  # the delta of each seq the backend accepted, for a resend
        self._closing = False
        self._unwatched_since: float | None = None  # loop time of the first "nobody watches"
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name=f"miner-chunks-{lease.job_id}")

    @property
    def seq(self) -> int:
        return len(self._sent)

    def add(self, delta: str) -> None:
        """New output text; never blocks, never raises."""
        if delta and self.stopped is None:
            self._pending.append(delta)
            self._pending_chars += len(delta)
            self._wake.set()

    async def finish(self, timeout: float) -> None:
        """Post what is still waiting, without waiting for the interval; give up after
        `timeout` seconds (the result must not wait long for a stream)."""
        self._closing = True
        self._wake.set()
        done, _ = await asyncio.wait({self._task}, timeout=timeout)
        if not done:
            self._stop("the last chunks could not be posted in time")
            await self.cancel()

    async def cancel(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def _stop(self, why: str) -> None:
        if self.stopped is None:
            self.stopped = why
            self._pending.clear()
            self._pending_chars = 0

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last_post: float | None = None  # loop time the previous post started
        while self.stopped is None:
            if not self._pending:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if last_post is not None:
                due = last_post + self.interval
                while (self._pending_chars < self.eager_chars and not self._closing
                       and loop.time() < due):
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(due - loop.time()):
                            await self._wake.wait()
            last_post = loop.time()
            await self._post(self._take())

    def _take(self) -> str:
        text = "".join(self._pending)
        delta, rest = text[: self.max_chars], text[self.max_chars :]
        self._pending = [rest] if rest else []
        self._pending_chars = len(rest)
        return delta

    async def _post(self, delta: str) -> None:
        backoff = Backoff(base=min(CHUNK_BACKOFF_BASE, self.backoff_cap), cap=self.backoff_cap)
        while True:
            try:
                ack = await self.backend.post_chunk(self.lease, self.seq, delta)
            except ChunkGap as gap:
                if not 0 <= gap.next_seq < self.seq:  # < : else it is the seq just sent
                    self._stop(f"the backend expects chunk {gap.next_seq}, after {self.seq} posted")
                    log.warning("job %s: %s; no more chunks", self.lease.job_id, self.stopped)
                    return
                # The backend lacks what came after next_seq: all of it goes again, as one
                # text in front of what is waiting.
                resend = "".join(self._sent[gap.next_seq :]) + delta
                del self._sent[gap.next_seq :]
                self._pending.insert(0, resend)
                self._pending_chars += len(resend)
                log.info("job %s: resending the stream from chunk %d", self.lease.job_id, gap.next_seq)
                return
            except LeaseLost as exc:
                self._stop("the lease is lost")
                log.warning("job %s: lease lost (%s)", self.lease.job_id, exc)
                self.lost.set()
                return
            except (BackendUnavailable, ValueError) as exc:  # ValueError: a 200 that is not JSON
                self.failed_posts += 1
                delay = backoff.fail()
                if isinstance(exc, BackendUnavailable) and exc.retry_after:
                    delay = max(delay, min(exc.retry_after, self.backoff_cap))
                log.warning("job %s: cannot post chunk %d (%s); retrying in %.1fs",
                            self.lease.job_id, self.seq, exc, delay)
                await asyncio.sleep(delay)
                continue
            except BackendError as exc:  # no chunk endpoint, or a refusal a retry cannot fix
                self._stop(str(exc))
                log.warning("job %s: chunks refused (%s); the result is still posted",
                            self.lease.job_id, exc)
                return
            self._sent.append(delta)
            self.posts += 1
            self._watched(ack.watching)
            return

    def _watched(self, watching: bool) -> None:
        now = asyncio.get_running_loop().time()
        if watching:
            self._unwatched_since = None
        elif self._unwatched_since is None:
            self._unwatched_since = now
        elif now - self._unwatched_since >= self.unwatched_grace:
            self._stop("nobody is watching the stream")
            log.debug("job %s: nobody is watching; no more chunks", self.lease.job_id)
