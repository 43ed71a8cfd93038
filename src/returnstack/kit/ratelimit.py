"""Per-key token buckets (per process: with N replicas the effective limit is N times higher)."""

import math
import threading
import time

from fastapi import Request

from returnstack.kit.errors import RateLimited


class TokenBuckets:
    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """Take one token; return 0 when allowed, else the seconds until one is available."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / self.rate


def check_rate_limit(request: Request, key: str) -> None:
    buckets: TokenBuckets | None = request.app.state.rate_limiter
    if buckets is None:
        return
    wait = buckets.take(key)
    if wait:
        raise RateLimited(
            "Too many requests for this API key; retry after the delay in Retry-After.",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )
