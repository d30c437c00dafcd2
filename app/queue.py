"""The miner job queue on Redis: the fast path that hands job ids to long-polling miners.

Redis holds only job ids. The database owns job state, leases and attempts (app/leases), so a
lost or flushed Redis loses no job: the reconciler pushes back what the DB says is queued.
Lists are consumed from the right: new jobs LPUSH to the back of the line, redeliveries RPUSH to
the front. A miner's long-poll BRPOPs one kind's list and takes the rest of a batch with one
RPOP; idle long-polls yield to waiting chat (app/idle/kind.py). The lists share one hash tag,
so commands over several of them stay in one Redis Cluster slot (app/redis_client.py).

A job asked for a named model (/v1/chat/completions) goes on that model's own list; a miner that
declares the model BRPOPs its list and the kind's common list in one command, so it takes either,
and a miner serving another model never sees the job. The set of model lists is kept beside them
(`members` reads them all for the reconciler).

Long-polls take turns (PollGate): in each process, one poll at a time blocks in Redis on a given
set of lists; the others wait their turn in the process, first come first served. A poll whose
turn comes pops what is there (up to its batch), so under load the jobs that arrived meanwhile go
out together, one lease and one results request for many, instead of one job to each of many
blocked miners; at low load the poll blocked in Redis takes each job the moment it is pushed, as
before. It also keeps the blocking connections to Redis at one per set of lists, not one per
waiting miner.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

KINDS = ("chat", "idle")
# A push onto a model's list also records the model among the kind's lists (JobQueue.models),
# in one round trip: KEYS the list and the set of models (one hash tag, one Cluster slot),
# ARGV the model, LPUSH or RPUSH, then the ids. Two commands cost a /v1 submission a second
# round trip on its way to a miner (0.35 ms of a light-load dispatch, traced).
PUSH_ROUTED = """
redis.call('SADD', KEYS[2], ARGV[1])
return redis.call(ARGV[2], KEYS[1], unpack(ARGV, 3))
"""
SCRIPT_IDS_AT_MOST = 1000  # more ids than this go as two commands (Lua's unpack has a limit)

# What a pop takes at once, in one round trip: up to ARGV[1] ids from the first non-empty list
# of KEYS (in order), as {list, ids}. With a poll slot (ARGV[2] the wallet's MINER_MAX_POLLS, the
# slot's counter the last key, ARGV[3] its expiry), a pop that finds nothing takes the slot it
# will wait in: {'', 1}; or {'', 0} when the wallet's slots are all taken (the count is left as
# it was). A pop that finds ids takes no slot: it does not wait. Without a slot (ARGV[2] '0'): {}.
TAKE = """
local lists = #KEYS
if ARGV[2] ~= '0' then lists = lists - 1 end
for i = 1, lists do
  local ids = redis.call('RPOP', KEYS[i], ARGV[1])
  if ids then return {KEYS[i], ids} end
end
if ARGV[2] == '0' then return {} end
local slots = KEYS[#KEYS]
local n = redis.call('INCR', slots)
redis.call('EXPIRE', slots, ARGV[3])
if n <= tonumber(ARGV[2]) then return {'', 1} end
if redis.call('DECR', slots) <= 0 then redis.call('DEL', slots) end
return {'', 0}
"""


def tagged(prefix: str, name: str) -> str:
    """A key under the queue's hash tag: in the lists' Redis Cluster slot, so one script may
    touch it and them."""
    return f"{prefix}:{{{prefix}:q}}:{name}"


class PollsTaken(Exception):
    """The wallet already holds all its long-poll slots (app/leases/polls.py answers 429)."""


@dataclass
class PollSlot:
    """One of a wallet's MINER_MAX_POLLS long-poll slots (app/leases/polls.py: the counter's
    key, the cap, the counter's expiry). The pop takes it only when it has to wait, in the same
    round trip that found nothing (TAKE); whoever made the slot gives it back if `held`."""
    key: str
    cap: int
    ttl_s: int
    # the round trip that may take it (TAKE is only sent while the slot is not held), awaited
    # before the slot is given back: a pop cancelled (its client hung up) while the script ran
    # still learns whether the slot was taken
    pending: asyncio.Future[Any] | None = None

    @property
    def held(self) -> bool:
        call = self.pending
        return (call is not None and call.done() and not call.cancelled()
                and call.exception() is None and bool(_slot_taken(call.result())))

    async def settled(self) -> None:
        if self.pending is not None:
            with contextlib.suppress(BaseException):
                await self.pending


class JobQueue:
    def __init__(self, redis: Redis, prefix: str = "mia", *, blocking: Redis | None = None):
        self.redis = redis
        self.blocking = blocking or redis  # for BRPOP: its socket timeout outlasts the wait
        self.prefix = prefix
        self.done_channel = f"{prefix}:events:done"  # a job changed state: its id
        self.chunk_channel = f"{prefix}:events:chunk"  # a miner streamed output: the job's id
        self.gate = PollGate()
        self._push_routed: Any = None  # PUSH_ROUTED, registered on its first use
        self._take: Any = None  # TAKE, likewise

    def key(self, kind: str, model: str | None = None) -> str:
        if kind not in KINDS:
            raise ValueError(f"unknown job kind {kind!r}")
        # One hash tag for every kind's list, so a BRPOP over several stays in one Redis Cluster
        # slot; the tag names this deployment's queue, so other keys still spread.
        base = tagged(self.prefix, kind)
        return base if model is None else f"{base}@{model}"

    def _models_key(self, kind: str) -> str:
        return f"{self.key(kind)}:models"  # the models that have a list of this kind

    async def push(self, kind: str, *job_ids: str, model: str | None = None) -> None:
        await self._push(kind, "LPUSH", job_ids, model)

    async def push_front(self, kind: str, *job_ids: str, model: str | None = None) -> None:
        await self._push(kind, "RPUSH", job_ids, model)

    async def _push(self, kind: str, command: str, job_ids: Sequence[str],
                    model: str | None) -> None:
        if not job_ids:
            return
        key = self.key(kind, model)
        if model is None:
            await self.redis.execute_command(command, key, *job_ids)
        elif len(job_ids) <= SCRIPT_IDS_AT_MOST:
            if self._push_routed is None:
                self._push_routed = self.redis.register_script(PUSH_ROUTED)
            await self._push_routed(keys=[key, self._models_key(kind)],
                                    args=[model, command, *job_ids])
        else:
            await self.redis.sadd(self._models_key(kind), model)
            await self.redis.execute_command(command, key, *job_ids)

    async def pop_many(self, kind: str, most: int, timeout_s: float,
                       model: str | None = None, routes: Sequence[str] = (),
                       slot: PollSlot | None = None) -> list[str]:
        """Up to `most` job ids of one kind, oldest first, waiting up to timeout_s seconds for the
        first; never busy-polls. The rest are taken at once (RPOP with a count) from the list
        the first came from. With `model`, that model's list comes before the common one, and
        the `routes` lists (app/leases/served.py routes) before both. A pop that has to wait
        takes `slot` first (PollsTaken if the wallet has none left)."""
        keys = [self.key(kind)] if model is None else [self.key(kind, model), self.key(kind)]
        keys = [self.key(kind, r) for r in routes] + keys
        return (await self.pop_from(keys, most, timeout_s, slot))[1]

    async def pop_from(self, keys: list[str], most: int, timeout_s: float,
                       slot: PollSlot | None = None) -> tuple[str | None, list[str]]:
        """pop_many over the lists `keys` (made by key()), in that order: (the list the ids came
        from, the ids). What is there is taken in one round trip (TAKE), which also takes the
        poll's slot if there was nothing; only then does the poll wait its turn and block."""
        if timeout_s <= 0 or (slot is not None and not slot.held):
            key, ids = await self._take_now(keys, most, slot if timeout_s > 0 else None)
            if ids or timeout_s <= 0:
                return key, ids
        deadline = time.monotonic() + timeout_s
        turn = await self.gate.take(keys, timeout_s)
        if turn is None:  # the poll in turn was blocked all along: nothing came for these lists
            return None, []
        try:
            timeout_s = deadline - time.monotonic()
            if timeout_s < MIN_BLOCK_S:  # its turn came too late to block: what is there now
                return await self.pop_from(keys, most, 0)
            item = await self.blocking.brpop(keys, timeout=timeout_s)
            if item is None:
                return None, []
            ids = [_text(item[1])]
            if most > 1:
                ids += [_text(v) for v in await self.redis.rpop(item[0], most - 1) or ()]
        finally:
            turn.leave()
        return _text(item[0]), ids

    async def hold(self, slot: PollSlot) -> None:
        """Take the poll's slot without popping (a poll about to wait before it pops)."""
        if not slot.held:
            await self._take_now([], 0, slot)

    async def _take_now(self, keys: list[str], most: int,
                        slot: PollSlot | None) -> tuple[str | None, list[str]]:
        if self._take is None:
            self._take = self.redis.register_script(TAKE)
        if slot is None:
            reply = await self._take(keys=keys, args=[most or 1, 0, 0])
        else:
            call = asyncio.ensure_future(self._take(keys=[*keys, slot.key],
                                                    args=[most or 1, slot.cap, slot.ttl_s]))
            slot.pending = call  # its fate is known even if this pop is cancelled meanwhile
            reply = await asyncio.shield(call)
        taken = _slot_taken(reply)
        if taken is False:
            raise PollsTaken()
        if taken or not reply:
            return None, []
        return _text(reply[0]), [_text(v) for v in reply[1]]

    async def models(self, kind: str) -> set[str]:
        return {_text(v) for v in await self.redis.smembers(self._models_key(kind))}

    async def members(self, kind: str) -> set[str]:
        """Every id waiting in the kind's lists, the common one and each model's."""
        keys = [self.key(kind)] + [self.key(kind, m) for m in await self.models(kind)]
        found: set[str] = set()
        for key in keys:
            found.update(_text(v) for v in await self.redis.lrange(key, 0, -1))
        return found

    async def depth(self, kind: str, *, every_model: bool = False,
                    skip: str | None = None) -> int:
        """Ids waiting in the kind's common list (what any miner can take), or in all its
        lists, each model's too."""
        keys = [self.key(kind)]
        if every_model:  # skip: lists whose name starts with it (app/trust's check lists)
            keys += [self.key(kind, m) for m in await self.models(kind)
                     if skip is None or not m.startswith(skip)]
        return sum([int(await self.redis.llen(key)) for key in keys])

    async def publish_done(self, *job_ids: str, answers: bytes | None = None) -> None:
        """One message for a whole batch: waiters match any of the ids in it (app/notify.py).
        `answers` (JSON, app/notify.py ANSWERS) rides on a second line: what the waiters of
        these jobs would otherwise read back from the database."""
        message = job_ids[0] if len(job_ids) == 1 else " ".join(job_ids)
        if answers is not None:
            message = message.encode() + b"\n" + answers
        await self.redis.publish(self.done_channel, message)


MIN_BLOCK_S = 0.01  # BRPOP takes its timeout in seconds with 3 decimals; below this, no block
# (app/leases/endpoints.py: a long-poll with less than this left takes what is there)


class PollGate:
    """Turns for the long-polls of one process: one at a time per set of lists blocks in Redis
    (asyncio.Lock: waiters are woken first come first served, and a newcomer never overtakes
    one already waiting). A poll leaves the line when its wait runs out or it is cancelled (its
    client hung up); the lock of a set of lists nobody waits on is dropped."""

    def __init__(self) -> None:
        self._locks: dict[tuple[str, ...], tuple[asyncio.Lock, list[int]]] = {}

    def waiting(self) -> int:
        """Polls of this process in line or blocked in Redis (for tests)."""
        return sum(users[0] for _, users in self._locks.values())

    async def take(self, keys: Sequence[str], timeout_s: float) -> _Turn | None:
        """The turn for these lists, once the polls before it are done; None if it did not
        come within timeout_s. The caller must leave() it."""
        name = tuple(keys)
        found = self._locks.get(name)
        if found is None:
            found = self._locks[name] = (asyncio.Lock(), [0])
        lock, users = found
        users[0] += 1
        try:
            async with asyncio.timeout(timeout_s):
                await lock.acquire()
        except TimeoutError:
            self._leave(name, users)
            return None
        except BaseException:
            self._leave(name, users)
            raise
        return _Turn(self, name, lock, users)

    def _leave(self, name: tuple[str, ...], users: list[int]) -> None:
        users[0] -= 1
        if users[0] == 0:
            self._locks.pop(name, None)


class _Turn:
    def __init__(self, gate: PollGate, name: tuple[str, ...], lock: asyncio.Lock,
                 users: list[int]) -> None:
        self.gate, self.name, self.lock, self.users = gate, name, lock, users

    def leave(self) -> None:
        self.lock.release()
        self.gate._leave(self.name, self.users)


def _slot_taken(reply: list[Any]) -> bool | None:
    """What TAKE said of the poll's slot: taken (True), all the wallet's taken (False), or
    nothing (None: it popped ids, or had no slot to take)."""
    return bool(reply[1]) if len(reply) == 2 and _text(reply[0]) == "" else None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
