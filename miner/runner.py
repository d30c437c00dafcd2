"""The miner loop: jobs leased from the backend, each answered by the model server while a keeper
extends its lease, then its signed result posted.

Batch protocol (the default when the backend has it): one dispatcher leases as many jobs per
request as there are free slots (GET /job/batch?max=N), runs each in its own task, and results
go back in batches (miner/batch.py). Single-job protocol (MIA_MINER_BATCH=off, or a backend that
answers 404 on GET /job/batch): `concurrency` workers, each long-polling GET /job/next.

Chat polls declare the model this miner serves (`model=`), so they also lease the jobs API
clients asked that model for. A chat job with `stream: true` is generated with a streamed
request to the model server, its output posted in chunks while it grows (miner/chunks.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from miner.backoff import Backoff
from miner.batch import ResultBatcher
from miner.chunks import ChunkPoster
from miner.client import (
    MAX_BATCH,
    BackendClient,
    BackendError,
    BackendRejected,
    BackendUnavailable,
    EndpointMissing,
    Lease,
    LeaseLost,
)
from miner.config import MinerConfig
from miner.model import Completion, ModelClient, ModelError
from miner.prompt import build_messages, job_sampling, strict_alternation

log = logging.getLogger("miner")

# Never extend more often than this (seconds), however short the lease.
SUSPENDED = 3  # exit code: the operator suspended this wallet
MIN_EXTEND_INTERVAL = 0.25
# When idle jobs are accepted, chat is long-polled this long (seconds) before an idle poll, so
# chat keeps priority without starving idle work.
CHAT_WAIT_WITH_IDLE = 5
# Keep retrying a result the backend could not take until this long past the lease (seconds).
RESULT_GRACE = 60.0
# How long a release or other clean-up call may take during shutdown (seconds).
CLEANUP_TIMEOUT = 5.0
# After a second signal, how long an open poll may still answer (seconds): the backend may have
# leased jobs to it just before, and their answer is on its way; those are given back at once
# instead of sitting leased to a miner that has gone until their leases expire.
ABORT_POLL_GRACE = 1.0
# How long a streamed job's last chunks may delay its result (seconds).
FINAL_CHUNKS_TIMEOUT = 2.0
# A model name the backend accepts in `model=` on a poll.
MODEL_NAME = re.compile(r"[A-Za-z0-9._:/@+-]{1,128}")

T = TypeVar("T", Lease | None, list[Lease])


@dataclass
class Stats:
    completed: int = 0
    released: int = 0
    lost: int = 0
    output_tokens: int = 0
    streamed: int = 0  # jobs generated with a stream
    chunk_posts: int = 0


class Miner:
    def __init__(self, cfg: MinerConfig, backend: BackendClient, model: ModelClient) -> None:
        self.cfg = cfg
        self.backend = backend
        self.model = model
        self.stats = Stats()
        self.suspended = False
        self.idle_enabled = cfg.accept_idle
        self.declared_model: str | None = None  # sent as model= on chat polls
        self._posters: dict[str, ChunkPoster] = {}  # job id -> its chunks, for streamed jobs
        self._stop = asyncio.Event()
        self._model_backoff = Backoff(base=1.0, cap=cfg.backoff_cap)
        self._model_ready_at = 0.0
        self._model_needs_probe = False
        self._probe_lock = asyncio.Lock()
        self._workers: list[asyncio.Task[None]] = []
        self.in_flight: dict[str, Lease] = {}
        # Batch protocol: a result batcher per job kind that has the batch endpoints.
        self.batch = cfg.batch != "off"
        self._batchers: dict[str, ResultBatcher] = {}
        if self.batch:
            self._batchers = {kind: self._batcher(kind) for kind in ("chat", "idle")}
        self._dispatched: set[str] = set()  # ids of the dispatcher's jobs not finished yet
        self._slot_free = asyncio.Event()
        self._jobs: asyncio.TaskGroup | None = None  # the dispatcher's jobs, while it runs
        self._cleanups: set[asyncio.Task[None]] = set()  # releases of leases nobody can run

    # ---- lifecycle ---------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def request_stop(self) -> None:
        if not self._stop.is_set():
            log.info(
                "stopping: taking no new jobs, finishing %d in flight (up to %.0fs); open "
                "long-polls return within %ds; signal again to give jobs back and exit now",
                len(self.in_flight),
                self.cfg.drain_timeout,
                self.cfg.poll_wait,
            )
            self._stop.set()
            self._slot_free.set()  # wakes a dispatcher waiting for a free slot

    def abort(self) -> None:
        """Second signal: give in-flight jobs back now instead of finishing them."""
        self.request_stop()
        for t in self._workers:
            t.cancel()

    async def run(self) -> int:
        if not await self._start():
            return SUSPENDED if self.suspended else 0 if self.stopping else 2
        if self.batch:
            self._workers = [asyncio.create_task(self._dispatch(), name="miner-dispatcher")]
        else:
            self._workers = [
                asyncio.create_task(self._worker(i), name=f"miner-worker-{i}")
                for i in range(self.cfg.concurrency)
            ]
        log.info(
            "mining as %s: backend=%s model=%s declared=%s concurrency=%d idle=%s protocol=%s",
            self.backend.wallet.address,
            self.backend.base_url,
            self.model.model,
            self.declared_model or "no",
            self.cfg.concurrency,
            "on" if self.idle_enabled else "off",
            "batch" if self.batch else "single",
        )
        stop_wait = asyncio.create_task(self._stop.wait())
        await asyncio.wait({stop_wait, *self._workers}, return_when=asyncio.FIRST_COMPLETED)
        stop_wait.cancel()
        self.request_stop()
        _, pending = await asyncio.wait(self._workers, timeout=self.cfg.drain_timeout)
        if pending:
            log.warning(
                "drain timeout: giving %d unfinished job(s) back to the backend", len(self.in_flight)
            )
            for t in pending:
                t.cancel()
            await asyncio.wait(pending, timeout=CLEANUP_TIMEOUT * 2)
        if self._cleanups:  # releases of leases that came after their worker had gone
            await asyncio.wait(set(self._cleanups), timeout=ABORT_POLL_GRACE + CLEANUP_TIMEOUT)
        crashed = 0
        for t in self._workers:
            if t.done() and not t.cancelled() and t.exception() is not None:
                crashed += 1
                log.error("worker crashed: %r", t.exception())
        log.info(
            "stopped: %d completed, %d released, %d lost, %d output tokens, "
            "%d streamed in %d chunk posts",
            self.stats.completed,
            self.stats.released,
            self.stats.lost,
            self.stats.output_tokens,
            self.stats.streamed,
            self.stats.chunk_posts,
        )
        return 1 if crashed else SUSPENDED if self.suspended else 0

    async def _start(self) -> bool:
        """Resolve the model name and sign in, retrying transient failures until stopped."""
        backoff = Backoff(base=0.5, cap=self.cfg.backoff_cap)
        while not self.stopping and self.model.model is None:
            try:
                served = await self.model.list_models()
            except ModelError as exc:
                delay = backoff.fail()
                log.warning("%s; retrying in %.1fs", exc, delay)
                await self._sleep(delay)
                continue
            if len(served) == 1:
                self.model.model = served[0]
                log.info("using the only model the server serves: %s", served[0])
            else:
                log.error(
                    "the model server serves %s; choose one with --model",
                    ", ".join(served) if served else "no models",
                )
                return False
        self.declared_model = self._declarable(self.model.model)
        if self.declared_model is not None and not self.stopping:
            # once: what the model server can do beyond plain chat, declared with the model
            self.backend.capabilities = await self.model.probe()
            log.info("the model server offers %s", ", ".join(self.backend.capabilities)
                     if self.backend.capabilities else "plain chat only (no tools, no JSON output)")
        backoff.reset()
        while not self.stopping:
            try:
                await self.backend.ensure_token()
                return True
            except (BackendError, ValueError) as exc:  # ValueError: a 200 that is not JSON
                if self._suspended(exc):
                    return False
                delay = backoff.fail()
                log.warning("cannot sign in (%s); retrying in %.1fs", exc, delay)
                await self._sleep(delay)
        return False

    def _suspended(self, exc: Exception) -> bool:
        """The network's operator suspended this wallet: no request will succeed until they
        lift it, so stop (exit code 3) instead of signing in again and again."""
        if not (isinstance(exc, BackendRejected) and exc.code == "miner_suspended"):
            return False
        if not self.suspended:
            self.suspended = True
            log.error("this wallet (%s) is suspended by the network's operator: stopping. Ask "
                      "them why; start the miner again once it is lifted", self.backend.wallet.address)
        self.request_stop()
        return True

    @staticmethod
    def _declarable(name: str | None) -> str | None:
        if name is not None and MODEL_NAME.fullmatch(name):
            return name
        log.warning(
            "the model name %r cannot be declared to the backend (letters, digits and ._:/@+- "
            "only, at most 128); serving only jobs that ask for no particular model", name,
        )
        return None

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake up early when a stop is requested."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=max(0.0, seconds))

    # ---- the worker --------------------------------------------------------------------

    async def _worker(self, n: int) -> None:
        backoff = Backoff(base=0.5, cap=self.cfg.backoff_cap)
        while not self.stopping:
            await self._wait_model_ready()
            if self.stopping:
                break
            try:
                # Not cancelled on stop: a long-poll the backend is still serving may lease a job
                # to us after we hung up, and that lease would sit unused until it expired. The
                # poll returns within poll_wait seconds.
                lease = await self._polled(self._poll())
            except (BackendError, ValueError) as exc:  # ValueError: a 200 that is not JSON
                await self._poll_failed(backoff, exc)
                continue
            backoff.reset()
            if lease is None:
                continue
            # A job brought by a poll that was open when the stop came is in flight like any
            # other and is finished. Releasing it instead would cost it a delivery attempt,
            # and our other open polls could take it straight back (and release it again).
            await self._handle(lease)

    async def _polled(self, poll: Coroutine[Any, Any, T]) -> T:
        """Await a poll that a second signal does not cut off: cancelled, the worker leaves it
        ABORT_POLL_GRACE seconds to answer, and gives back whatever it leased."""
        task = asyncio.ensure_future(poll)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            self._clean_up(self._give_back(task))
            raise

    async def _give_back(self, poll: asyncio.Future[Any]) -> None:
        started = time.monotonic()
        done, _ = await asyncio.wait({poll}, timeout=ABORT_POLL_GRACE)
        if not done:
            poll.cancel()  # nothing leased yet; the backend sees us hang up
            return
        if poll.cancelled() or poll.exception() is not None:
            return
        got = poll.result()
        for lease in got if isinstance(got, list) else [] if got is None else [got]:
            await self._release(lease, "miner shutting down", count=True)
            self._job_line(lease, "released", None, started)

    def _clean_up(self, work: Coroutine[Any, Any, None]) -> None:
        """Run work that outlives its worker (run() waits for it before exiting)."""
        task = asyncio.create_task(work)
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    async def _poll_failed(self, backoff: Backoff, exc: Exception) -> None:
        if self._suspended(exc):
            return
        delay = backoff.fail()
        if isinstance(exc, BackendUnavailable) and exc.retry_after:
            delay = max(delay, min(exc.retry_after, self.cfg.backoff_cap))
        log.warning("backend: %s; retrying in %.1fs", exc, delay)
        await self._sleep(delay)

    async def _poll(self) -> Lease | None:
        model = self.declared_model
        if not self.idle_enabled:
            return await self.backend.next_job("chat", self.cfg.poll_wait, model)
        lease = await self.backend.next_job(
            "chat", min(self.cfg.poll_wait, CHAT_WAIT_WITH_IDLE), model
        )
        if lease is not None or self.stopping or not self.idle_enabled:
            return lease
        return await self._next_idle()

    async def _next_idle(self) -> Lease | None:
        try:
            return await self.backend.next_job("idle", 0)
        except EndpointMissing:
            if self.idle_enabled:
                self.idle_enabled = False
                log.info("this backend has no idle-job endpoints; idle polling disabled")
            return None

    # ---- the batch dispatcher ----------------------------------------------------------

    def _batcher(self, kind: str) -> ResultBatcher:
        def in_flight() -> int:
            return sum(1 for lease in self.in_flight.values() if lease.kind == kind)

        return ResultBatcher(self.backend, kind, in_flight, self.cfg.batch_window_ms / 1000,
                             refill=lambda freed: self._refill(kind, freed), adopt=self._adopt)

    def _refill(self, kind: str, freed: int) -> tuple[int, str | None]:
        """How many jobs a result request of `freed` of the dispatcher's jobs should lease for
        the slots they free (they free them once it answers): all of them, unless the miner is
        stopping, its model is failing, or `kind` is idle and idle jobs are off."""
        if (self.stopping or self._jobs is None or self._model_needs_probe
                or time.monotonic() < self._model_ready_at
                or (kind == "idle" and not self.idle_enabled)):
            return 0, None
        return min(MAX_BATCH, freed), self.declared_model if kind == "chat" else None

    def _adopt(self, leases: list[Lease]) -> None:
        """Leases that came with a result request: handled like the dispatcher's own; given
        back if the dispatcher has gone meanwhile."""
        for lease in leases:
            try:
                if self._jobs is None:
                    raise RuntimeError("no dispatcher")
                self._jobs.create_task(self._handle(lease), name=f"miner-job-{lease.job_id}")
            except RuntimeError:  # its task group has finished or is shutting down
                self._clean_up(self._release(lease, "miner shutting down"))
                continue
            self._dispatched.add(lease.job_id)

    async def _dispatch(self) -> None:
        backoff = Backoff(base=0.5, cap=self.cfg.backoff_cap)
        async with asyncio.TaskGroup() as jobs:
            self._jobs = jobs  # result requests bring leases too (_adopt)
            while not self.stopping:
                await self._wait_free_slot()
                await self._wait_model_ready()  # after: a slot may free because the model failed
                if self.stopping:
                    break
                free = min(MAX_BATCH, self.cfg.concurrency - len(self._dispatched))
                try:
                    # Not cancelled on stop, like the single-job poll (see _worker).
                    leases = await self._polled(self._poll_batch(free))
                except EndpointMissing:
                    log.info("this backend has no batch endpoints; using the single-job protocol")
                    self.batch = False
                    self._batchers.clear()
                    break
                except (BackendError, ValueError) as exc:  # ValueError: a 200 that is not JSON
                    await self._poll_failed(backoff, exc)
                    continue
                backoff.reset()
                for lease in leases:
                    self._dispatched.add(lease.job_id)
                    jobs.create_task(self._handle(lease), name=f"miner-job-{lease.job_id}")
        self._jobs = None
        if not self.batch and not self.stopping:
            async with asyncio.TaskGroup() as workers:
                for i in range(self.cfg.concurrency):
                    workers.create_task(self._worker(i), name=f"miner-worker-{i}")

    async def _wait_free_slot(self) -> None:
        while len(self._dispatched) >= self.cfg.concurrency and not self.stopping:
            self._slot_free.clear()
            await self._slot_free.wait()

    def _job_done(self, lease: Lease) -> None:
        self.in_flight.pop(lease.job_id, None)
        if lease.job_id in self._dispatched:
            self._dispatched.discard(lease.job_id)
            self._slot_free.set()

    async def _poll_batch(self, n: int) -> list[Lease]:
        """Up to n leases: chat first; idle ones only when no chat job came."""
        model = self.declared_model
        if not self.idle_enabled:
            return await self.backend.next_jobs("chat", n, self.cfg.poll_wait, model)
        wait = min(self.cfg.poll_wait, CHAT_WAIT_WITH_IDLE)
        leases = await self.backend.next_jobs("chat", n, wait, model)
        if leases or self.stopping or not self.idle_enabled:
            return leases
        if "idle" in self._batchers:
            try:
                return await self.backend.next_jobs("idle", n, 0)
            except EndpointMissing:
                # Chat has the batch endpoints but idle has not: idle jobs one at a time.
                self._batchers.pop("idle", None)
                log.info("this backend has no idle batch endpoints; idle jobs one at a time")
        lease = await self._next_idle()
        return [] if lease is None else [lease]

    # ---- model health gate -------------------------------------------------------------

    def _model_failed(self, exc: Exception) -> None:
        delay = self._model_backoff.fail()
        self._model_ready_at = max(self._model_ready_at, time.monotonic() + delay)
        self._model_needs_probe = True
        log.warning("model server: %s; taking no new jobs for %.1fs", exc, delay)

    async def _wait_model_ready(self) -> None:
        while not self.stopping:
            wait = self._model_ready_at - time.monotonic()
            if wait > 0:
                await self._sleep(wait)
                continue
            if not self._model_needs_probe:
                return
            async with self._probe_lock:
                if not self._model_needs_probe or time.monotonic() < self._model_ready_at:
                    continue
                try:
                    # A real (tiny) completion, not just /models: a server that lists models but
                    # fails every generation would otherwise burn the jobs' delivery attempts.
                    await self.model.chat([{"role": "user", "content": "ping"}], 1)
                except ModelError as exc:
                    self._model_failed(exc)
                else:
                    self._model_needs_probe = False
                    log.info("model server reachable again; taking jobs")

    # ---- one job -----------------------------------------------------------------------

    def _messages(self, lease: Lease) -> list[dict[str, str]]:
        if lease.kind == "idle":
            messages = [{"role": "user", "content": str(lease.job.get("prompt") or "")}]
        else:
            messages = build_messages(lease.job)
        if self.cfg.no_system_role:
            messages = strict_alternation(messages)
        return messages

    def _max_tokens(self, lease: Lease) -> int:
        asked = lease.job.get("max_tokens")
        if isinstance(asked, int) and not isinstance(asked, bool) and asked > 0:
            return min(asked, self.cfg.max_tokens)
        return self.cfg.max_tokens

    async def _handle(self, lease: Lease) -> None:
        started = time.monotonic()
        self.in_flight[lease.job_id] = lease
        lost = asyncio.Event()
        keeper = asyncio.create_task(self._keep_lease(lease, lost))
        poster = None
        if lease.kind == "chat" and lease.job.get("stream") is True:
            poster = self._posters[lease.job_id] = ChunkPoster(self.backend, lease, lost)
        try:
            completion = await self._generate(lease, lost, poster)
            if completion is None:
                return
            if poster is not None:
                # The stream's tail goes before the result, so a reader sees every delta
                # arrive as a delta; the result waits for it only briefly.
                await poster.finish(FINAL_CHUNKS_TIMEOUT)
            await self._deliver(lease, completion, lost, started)
        except asyncio.CancelledError:
            # Drain timeout or a second signal: the job cannot be finished here; give it back.
            await self._release(lease, "miner shutting down", count=True)
            self._job_line(lease, "released", None, started)
            raise
        except Exception as exc:  # a bug or a malformed answer: never leave the lease dangling
            log.exception("job %s: unexpected error", lease.job_id)
            await self._release(lease, f"miner error: {type(exc).__name__}", count=True)
            self._job_line(lease, "released", None, started, f"miner error: {type(exc).__name__}")
        finally:
            # Before any await: the jobs of one result batch all finish in the same turn of
            # the event loop, so the dispatcher sees all their slots free and leases them in
            # one request.
            self._job_done(lease)
            keeper.cancel()
            if poster is not None:
                self._posters.pop(lease.job_id, None)
                await poster.cancel()
                self.stats.chunk_posts += poster.posts
            with contextlib.suppress(asyncio.CancelledError):
                await keeper

    async def _generate(
        self, lease: Lease, lost: asyncio.Event, poster: ChunkPoster | None
    ) -> Completion | None:
        started = time.monotonic()
        messages, max_tokens = self._messages(lease), self._max_tokens(lease)
        sampling = job_sampling(lease.job)
        if poster is None:
            gen = asyncio.create_task(self.model.chat(messages, max_tokens, sampling))
        else:
            self.stats.streamed += 1
            gen = asyncio.create_task(
                self.model.chat_stream(messages, max_tokens, poster.add, sampling))
        lost_wait = asyncio.create_task(lost.wait())
        try:
            await asyncio.wait({gen, lost_wait}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost_wait.cancel()
            if not gen.done():
                gen.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await gen
        if gen.cancelled():
            self.stats.lost += 1
            self._job_line(lease, "lost", None, started, "lease lost during generation")
            return None
        exc = gen.exception()
        if exc is None:
            self._model_backoff.reset()
            return gen.result()
        if not isinstance(exc, ModelError):
            exc = ModelError(f"unexpected {type(exc).__name__}")
        self._model_failed(exc)
        await self._release(lease, f"model server error: {exc}", count=True)
        self._job_line(lease, "released", None, started, str(exc))
        return None

    async def _keep_lease(self, lease: Lease, lost: asyncio.Event) -> None:
        """Extend the lease at about half of what remains, until cancelled or the lease is lost."""
        backoff = Backoff(base=0.25, cap=5.0)
        delay = max(MIN_EXTEND_INTERVAL, lease.remaining() / 2)
        while True:
            await asyncio.sleep(delay)
            try:
                await self.backend.extend(lease)
            except LeaseLost as exc:
                log.warning("job %s: lease lost (%s)", lease.job_id, exc)
                lost.set()
                return
            except (BackendError, ValueError) as exc:
                delay = min(backoff.fail(), max(MIN_EXTEND_INTERVAL, lease.remaining() / 2))
                log.warning("job %s: cannot extend lease (%s); retrying in %.1fs", lease.job_id, exc, delay)
                continue
            backoff.reset()
            delay = max(MIN_EXTEND_INTERVAL, lease.remaining() / 2)

    async def _deliver(
        self, lease: Lease, completion: Completion, lost: asyncio.Event, started: float
    ) -> None:
        backoff = Backoff(base=0.5, cap=min(10.0, self.cfg.backoff_cap))
        tokens = completion.completion_tokens
        while True:
            try:
                await self._post_result(lease, completion.text, tokens, completion.finish_reason)
            except LeaseLost as exc:
                # Expired or reassigned: somebody else answers it. Never re-post on another lease.
                self.stats.lost += 1
                self._job_line(lease, "lost", tokens, started, str(exc))
                return
            except BackendRejected as exc:
                self._job_line(lease, "rejected", tokens, started, str(exc))
                await self._release(lease, f"result rejected: {exc.code}", count=True)
                return
            except BackendUnavailable as exc:
                if lost.is_set():
                    self.stats.lost += 1
                    self._job_line(lease, "lost", tokens, started, "lease lost while posting")
                    return
                if time.monotonic() > lease.deadline + RESULT_GRACE:
                    self.stats.lost += 1
                    self._job_line(
                        lease, "abandoned", tokens, started, f"backend unavailable ({exc}); the lease will expire"
                    )
                    return
                delay = backoff.fail()
                log.warning("job %s: cannot post result (%s); retrying in %.1fs", lease.job_id, exc, delay)
                await asyncio.sleep(delay)
                continue
            self.stats.completed += 1
            if tokens:
                self.stats.output_tokens += tokens
            self._job_line(lease, "completed", tokens, started)
            return

    async def _post_result(
        self, lease: Lease, output: str, tokens: int | None, finish_reason: str | None = None
    ) -> None:
        batcher = self._batchers.get(lease.kind)
        if batcher is not None:
            try:
                await batcher.post(lease, output, tokens, finish_reason)
                return
            except EndpointMissing:
                # A batch lease endpoint without the batch result endpoint: post one by one.
                if self._batchers.pop(lease.kind, None) is not None:
                    log.info("this backend has no %s batch result endpoint; posting one by one",
                             lease.kind)
        await self.backend.post_result(lease, output, tokens, finish_reason)

    async def _release(self, lease: Lease, reason: str, *, count: bool = False) -> None:
        try:
            await asyncio.wait_for(self.backend.release(lease, reason), CLEANUP_TIMEOUT)
        except LeaseLost:
            return
        except (BackendError, asyncio.TimeoutError) as exc:
            log.warning(
                "job %s: could not release (%s); its lease will expire and it will be retried",
                lease.job_id,
                exc,
            )
            return
        if count:
            self.stats.released += 1

    def _job_line(
        self, lease: Lease, status: str, tokens: int | None, started: float, why: str = ""
    ) -> None:
        line = "job %s kind=%s status=%s tokens=%s seconds=%.2f"
        args: list[Any] = [
            lease.job_id,
            lease.kind,
            status,
            "?" if tokens is None else tokens,
            time.monotonic() - started,
        ]
        poster = self._posters.get(lease.job_id)
        if poster is not None:
            line += " chunks=%d"
            args.append(poster.posts)
        if why:
            line += " reason=%s"
            args.append(why)
        (log.info if status == "completed" else log.warning)(line, *args)
