"""Results posted in batches: finished results wait a few milliseconds for each other, then go
to the backend in one POST /job/results (or /idle-job/results), which also leases, in the same
request, jobs for the slots those results free (?next=N&wait=0) when the miner wants them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from miner.client import MAX_BATCH, BackendClient, BackendUnavailable, Lease

# A result waiting to be posted: its lease, output, output tokens, and what post() awaits.
_Pending = tuple[Lease, str, int | None, str | None, "asyncio.Future[None]"]


class ResultBatcher:
    """Collects one kind's results and posts them together.

    A batch goes out when `window` seconds have passed since its first result, when it is full
    (MAX_BATCH), or at once when every job of its kind in flight (`in_flight()` counts them)
    has its result waiting here, since waiting longer could gain nothing. Results do not wait
    for those already in a request: jobs leased meanwhile may finish within the window and
    join them, which merges staggered groups of jobs into fewer requests.
    `post()` returns when its result is accepted and raises what the single endpoint would
    have raised for it: LeaseLost or BackendRejected for that result alone, BackendUnavailable
    (or any error) of the whole request for every result in it, which the caller retries.

    With `refill`, each request asks it how many jobs to lease for the slots its results free,
    and for which model (0: none); the leases that come back go to `adopt` before any result's
    `post()` returns, so they take those slots before the slots count as free.
    """

    def __init__(
        self,
        backend: BackendClient,
        kind: str,
        in_flight: Callable[[], int],
        window: float,
        refill: Callable[[int], tuple[int, str | None]] | None = None,
        adopt: Callable[[list[Lease]], None] | None = None,
    ) -> None:
        self.backend = backend
        self.kind = kind
        self.in_flight = in_flight
        self.window = window
        self.refill = refill
        self.adopt = adopt
        self._pending: list[_Pending] = []
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def post(
        self, lease: Lease, output: str, output_tokens: int | None, finish_reason: str | None = None
    ) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Retrieved here too, so a result whose caller was cancelled logs no "never retrieved".
        done.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._pending.append((lease, output, output_tokens, finish_reason, done))
        if len(self._pending) >= min(MAX_BATCH, self.in_flight()):
            self._flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.window, self._flush)
        # Shielded: a caller cancelled while its request is out still lets the request answer
        # the other results in it.
        await asyncio.shield(done)

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._pending:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            task = asyncio.create_task(self._send(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[_Pending]) -> None:
        wanted, model = self.refill(len(batch)) if self.refill is not None else (0, None)
        try:
            outcomes, leases = await self.backend.post_results_then(
                self.kind,
                [(lease, output, tokens, finish) for lease, output, tokens, finish, _ in batch],
                wanted if self.adopt is not None else 0,
                model,
            )
        except Exception as exc:  # the whole request failed, so did every result in it
            self._fail(batch, exc)
            return
        except BaseException:  # cancelled: whether the backend took them is unknown; retried
            self._fail(batch, BackendUnavailable("the result request was cancelled"))
            raise
        if leases and self.adopt is not None:
            self.adopt(leases)
        for (*_, done), outcome in zip(batch, outcomes):
            if done.done():
                continue
            if outcome is None:
                done.set_result(None)
            else:
                done.set_exception(outcome)

    @staticmethod
    def _fail(batch: list[_Pending], exc: Exception) -> None:
        for *_, done in batch:
            if not done.done():
                done.set_exception(exc)
