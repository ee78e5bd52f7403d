"""Pacing requests: the per-minute rate limit and the retry backoff."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable


class RateLimiter:
    """A token bucket allowing `per_minute` requests a minute, in bursts of a second's worth.

    Each `acquire` reserves the next free slot before sleeping, so concurrent callers are
    served in order and never together exceed the rate.
    """

    def __init__(
        self,
        per_minute: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be >= 1")
        self.interval = 60.0 / per_minute
        self.burst = max(1, per_minute // 60)
        self._clock = clock
        self._sleep = sleep
        self._tat = float("-inf")  # "theoretical arrival time" of the next request (GCRA)

    def reserve(self, now: float) -> float:
        """Take a slot at time `now`; return how long the caller must wait before using it."""
        tat = max(self._tat, now)
        self._tat = tat + self.interval
        return max(0.0, tat - (self.burst - 1) * self.interval - now)

    async def acquire(self) -> None:
        delay = self.reserve(self._clock())
        if delay > 0:
            await self._sleep(delay)


def backoff_delay(
    attempt: int,
    *,
    base: float,
    cap: float,
    rand: Callable[[], float] = random.random,
) -> float:
    """Exponential backoff with jitter: up to `base * 2**(attempt-1)`, capped, at least half."""
    ceiling = min(cap, base * 2 ** min(attempt - 1, 32))
    return ceiling * (0.5 + 0.5 * rand())
