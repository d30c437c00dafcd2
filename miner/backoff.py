from __future__ import annotations

import random


class Backoff:
    """Exponential backoff with jitter, in seconds.

    The n-th consecutive failure waits a uniform draw in [d/2, d] where
    d = min(cap, base * factor**(n-1)): never zero (so a hot loop is impossible) and never
    in lockstep with other miners that failed at the same moment.
    """

    def __init__(
        self,
        base: float = 0.5,
        cap: float = 30.0,
        factor: float = 2.0,
        rng: random.Random | None = None,
    ) -> None:
        if base <= 0 or cap < base or factor < 1:
            raise ValueError("backoff needs 0 < base <= cap and factor >= 1")
        self.base = base
        self.cap = cap
        self.factor = factor
        self.failures = 0
        self._rng = rng or random.Random()

    def ceiling(self) -> float:
        if self.failures == 0:
            return 0.0
        # Cap the exponent too, so a miner that has failed for days does not overflow.
        exp = min(self.failures - 1, 64)
        return min(self.cap, self.base * self.factor**exp)

    def fail(self) -> float:
        """Record a failure and return how long to wait before the next attempt."""
        self.failures += 1
        d = self.ceiling()
        return d / 2 + self._rng.uniform(0, d / 2)

    def reset(self) -> None:
        self.failures = 0
