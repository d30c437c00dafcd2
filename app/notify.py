"""Wakes requests waiting on a job (`?wait=`) when any process completes it, and streams
(app/v1/relay.py) when a miner posts a chunk of it.

One Redis pub/sub subscription per process fans out to local waiters. A lost message costs at
most one re-check interval, because waiters re-read the database (streams: Redis) on a timer.

A completion's message may carry the answers themselves (ANSWERS): a waiter that hears its
job's answer takes it from the message instead of reading the job back. A message without one
(a failure, a requeue, a reconnect) is only a wake-up: the waiter reads the database, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import orjson
from redis.asyncio import Redis

T = TypeVar("T")

log = logging.getLogger(__name__)
# A waiter also re-reads the database this often, in case a wake-up was lost (a completion whose
# PUBLISH failed; a reconnect wakes everyone anyway). Every waiter costs a read per interval:
# with 1,000 clients waiting, 2 s meant 500 reads/s doing nothing. Jittered, so they spread.
RECHECK_S = 10.0
# ANSWERS: the second line of a done message, a JSON object {job id: answer}; an answer is
# whatever the job kind puts there (chat: app/chat/kind.py wake_answer). Old processes split
# the whole message on whitespace, so the ids of the first line still wake their waiters.


class _Waiter(asyncio.Event):
    """A waiting request's wake-up, with the answer its message carried, if it did."""
    answer: Any = None


class Watch:
    """One stream's view of its job: `chunk` is set when a miner posted output, `state` when
    the job changed state (completed, failed, put back in the queue). The reader clears them."""

    def __init__(self) -> None:
        self.chunk = asyncio.Event()
        self.state = asyncio.Event()
        self.any = asyncio.Event()  # either of the two

    def set(self, event: asyncio.Event) -> None:
        event.set()
        self.any.set()


class Notifier:
    def __init__(self, redis: Redis, channel: str, chunk_channel: str | None = None):
        self.redis = redis
        self.channel = channel
        self.chunk_channel = chunk_channel or f"{channel}:chunk"
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._watches: dict[str, set[Watch]] = {}
        self._task: asyncio.Task[None] | None = None
        self._handlers: dict[str, Callable[[], None]] = {}

    def on(self, channel: str, handler: Callable[[], None]) -> None:
        """Also call handler() on any message on `channel` (and after a reconnect, when a
        message may have been missed). Register before start()."""
        self._handlers[channel] = handler

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="mia-notifier")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _listen(self) -> None:
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel, self.chunk_channel, *self._handlers)
                self._wake_all()  # anything published while we were away: re-check the DB
                for handler in self._handlers.values():
                    handler()
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    channel = _text(message["channel"])
                    if channel == self.channel:  # one job id, or several separated by spaces
                        ids, answers = _parse_done(message["data"])
                        for job_id in ids:
                            self._wake(job_id, answers.get(job_id))
                    elif channel == self.chunk_channel:
                        for watch in self._watches.get(_text(message["data"]), ()):
                            watch.set(watch.chunk)
                    elif channel in self._handlers:
                        self._handlers[channel]()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis went away: retry, waiters keep their own timer
                log.warning("job notifier lost Redis (%s); retrying", type(exc).__name__)
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    def _wake(self, job_id: str, answer: Any = None) -> None:
        for event in self._waiters.get(job_id, ()):
            event.answer = answer
            event.set()
        for watch in self._watches.get(job_id, ()):
            watch.set(watch.state)

    def _wake_all(self) -> None:
        for events in self._waiters.values():
            for event in events:
                event.answer = None  # a reconnect: whatever was missed is in the database
                event.set()
        for watches in self._watches.values():
            for watch in watches:
                watch.set(watch.chunk)
                watch.set(watch.state)

    @contextlib.contextmanager
    def watch(self, job_id: str) -> Iterator[Watch]:
        """A stream's events for one job, for as long as the block runs."""
        watch = Watch()
        with _registered(self._watches, job_id, watch):
            yield watch

    async def wait_until(self, job_id: str, timeout_s: float,
                         done: Callable[[], Awaitable[bool]], *, check_first: bool = True,
                         heard: Callable[[Any], bool] | None = None) -> bool:
        """Wait until `done()` is true or timeout_s passes. Returns the last value of done().
        check_first=False: the caller has just seen it not done, so wait before the first check.
        heard(answer): a wake-up carried the job's answer; True if that settles it, so done()
        (a read) is not asked."""
        event = _Waiter()
        with _registered(self._waiters, job_id, event):
            deadline = time.monotonic() + timeout_s
            while True:
                answer, event.answer = event.answer, None
                event.clear()  # before the check, so a wake-up during it is not lost
                if answer is not None and heard is not None and heard(answer):
                    return True
                if check_first and await done():
                    return True
                check_first = True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(),
                                           min(remaining, RECHECK_S * random.uniform(0.8, 1.2)))

    async def wait_for(self, job_id: str, timeout_s: float, current: T,
                       reload: Callable[[], Awaitable[T]], done: Callable[[T], bool],
                       *, fresh: bool = False,
                       answered: Callable[[T, Any], T | None] | None = None) -> T:
        """`current` once done(current), else the freshest reload() within timeout_s seconds.
        fresh: `current` was read (or written) just now, so no reload before the first wait.
        answered(current, answer): the job as a wake-up's answer says it is now (None if the
        answer cannot be used): taken instead of a reload."""
        if timeout_s <= 0 or done(current):
            return current
        latest = current

        async def finished() -> bool:
            nonlocal latest
            latest = await reload()
            return done(latest)

        def heard(answer: Any) -> bool:
            nonlocal latest
            told = answered(current, answer) if answered is not None else None
            if told is None or not done(told):
                return False
            latest = told
            return True

        await self.wait_until(job_id, timeout_s, finished, check_first=not fresh,
                              heard=heard if answered is not None else None)
        return latest


@contextlib.contextmanager
def _registered(registry: dict[str, set[Any]], job_id: str, item: Any) -> Iterator[None]:
    """`item` in registry[job_id] while the block runs; an emptied entry goes."""
    registry.setdefault(job_id, set()).add(item)
    try:
        yield
    finally:
        items = registry.get(job_id)
        if items is not None:
            items.discard(item)
            if not items:
                del registry[job_id]


def _parse_done(data: bytes | str) -> tuple[list[str], dict[str, Any]]:
    """A done message: its job ids, and the answers it carries by job id (ANSWERS)."""
    raw = data if isinstance(data, bytes) else data.encode()
    head, _, tail = raw.partition(b"\n")
    answers: dict[str, Any] = {}
    if tail:
        try:
            parsed = orjson.loads(tail)
        except orjson.JSONDecodeError:
            log.warning("a done message carried answers that are not JSON; ignored")
        else:
            if isinstance(parsed, dict):
                answers = parsed
    return head.decode().split(), answers


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
