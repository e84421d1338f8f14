"""Client-side pacing: requests-per-minute and tokens-per-minute buckets, and a circuit breaker.

Rate limits are enforced before a request is sent, so a run against a metered API stays under its quota
instead of discovering it through 429s. The circuit breaker turns "the endpoint has been failing for five
minutes" into one clear stop instead of hours of retries; the run resumes from the cache afterwards.
"""

from __future__ import annotations

import asyncio
import time

from datagen.errors import CircuitOpen


class TokenBucket:
    """Async token bucket refilled at ``per_minute / 60`` per second, holding one second's worth.

    A one-second bucket paces requests evenly instead of bursting a whole minute's quota at once (servers
    often enforce sub-minute windows). ``acquire(n)`` waits until the bucket holds ``min(n, capacity)``,
    then takes all ``n``: an oversized request drives the balance negative and later callers wait it off,
    so the long-run rate stays exact.
    """

    def __init__(self, per_minute: float):
        if per_minute <= 0:
            raise ValueError("per_minute must be positive")
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate)
        self.tokens = self.capacity
        self.updated = time.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    async def acquire(self, amount: float = 1.0) -> None:
        async with self._lock:  # FIFO: waiters are served in arrival order
            needed = min(amount, self.capacity)
            while True:
                self._refill()
                if self.tokens >= needed:
                    self.tokens -= amount
                    return
                await asyncio.sleep((needed - self.tokens) / self.rate)


class CircuitBreaker:
    """Opens when every request has failed for ``window`` seconds in a row; any success closes it again."""

    def __init__(self, window: float | None):
        self.window = window
        self.failing_since: float | None = None
        self.open = False

    def check(self) -> None:
        """Raise CircuitOpen (fail fast) once the breaker has opened."""
        if self.open:
            raise CircuitOpen(
                f"endpoint has failed continuously for more than {self.window:.0f} s; stopping the run. "
                "Fix the endpoint and re-run with --resume: answers already received are cached."
            )

    def record_success(self) -> None:
        self.failing_since = None

    def record_failure(self) -> None:
        if self.window is None:
            return
        now = time.monotonic()
        if self.failing_since is None:
            self.failing_since = now
        elif now - self.failing_since > self.window:
            self.open = True
