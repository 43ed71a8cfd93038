"""Token buckets by key (per process: with N replicas the effective limit is N times higher),
and the API's rate limit: one bucket per secret key; per publishable key *and* client
address (the publishable key is in every shopper's browser: one client must not throttle a
whole storefront); storefront calls per session (kit users: storefront/auth.py)."""

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from fastapi import Request

from returnstack.kit.errors import RateLimited

MAX_KEYS = 100_000


class TokenBuckets:
    """Each key has `burst` tokens and earns `rate` a second back.

    The table stays small: it is kept in order of last use, and every call forgets, from
    the least recently used end, buckets that are full again (a missing bucket is a full
    one, so forgetting them changes nothing). Beyond `max_keys` busy buckets, the least
    recently used are forgotten too (they start full again: under such a flood, a client
    that cycles keys gets fresh buckets anyway)."""

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        max_keys: int = MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._buckets)

    def _tokens(self, key: str, now: float) -> float:
        tokens, last = self._buckets.get(key, (self.burst, now))
        return min(self.burst, tokens + (now - last) * self.rate)

    def _set(self, key: str, tokens: float, now: float) -> None:
        self._buckets[key] = (tokens, now)
        self._buckets.move_to_end(key)
        while self._buckets:
            oldest, (old_tokens, last) = next(iter(self._buckets.items()))
            full = old_tokens + (now - last) * self.rate >= self.burst
            if not full and len(self._buckets) <= self.max_keys:
                break
            del self._buckets[oldest]

    def _wait(self, tokens: float) -> float:
        return 0.0 if tokens >= 1 else (1 - tokens) / self.rate

    def wait(self, key: str) -> float:
        """0 when a token is there, else the seconds until one is (nothing is taken)."""
        with self._lock:
            return self._wait(self._tokens(key, self.clock()))

    def take(self, key: str) -> float:
        """Take one token: 0 when allowed, else the seconds until one is available."""
        now = self.clock()
        with self._lock:
            tokens = self._tokens(key, now)
            if tokens >= 1:
                self._set(key, tokens - 1, now)
                return 0.0
            return self._wait(tokens)

    def drain(self, key: str, *, everything: bool = False) -> float:
        """Take one token (or all of them) whether or not there is one; answer the tokens
        left before this call."""
        now = self.clock()
        with self._lock:
            tokens = self._tokens(key, now)
            self._set(key, 0.0 if everything else max(0.0, tokens - 1), now)
            return tokens

    def peek(self, key: str) -> tuple[int, int, float]:
        """(burst, whole tokens left, seconds until the bucket is full), taking nothing."""
        with self._lock:
            tokens = self._tokens(key, self.clock())
        return int(self.burst), int(tokens), (self.burst - tokens) / self.rate


def client_address(request: Request) -> str:
    """The client's address as the server sees it (behind a proxy, run the server with
    proxy headers so that this is the real client)."""
    return request.client.host if request.client else "unknown"


def check_rate_limit(request: Request, key: str) -> None:
    buckets: TokenBuckets | None = request.app.state.rate_limiter
    if buckets is None:
        return
    wait = buckets.take(key)
    if wait:
        raise RateLimited(
            "Too many requests; retry after the delay in Retry-After.",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )


def remaining_tokens(request: Request, key: str) -> tuple[int, int, float] | None:
    """(limit, remaining, seconds until full) of a key's bucket, for headers that report it;
    None when rate limiting is off."""
    buckets: TokenBuckets | None = request.app.state.rate_limiter
    if buckets is None:
        return None
    return buckets.peek(key)
