"""Limits on failed guest sign-ins (API.md 4.1): per client address and per order, without
ever locking the rightful owner out for more than a minute.

Only failures count. Three kinds of bucket, each earning one failure back a minute:

- per client address (and tenant): 20 failures. Guessing across many orders from one
  address is slowed to one guess a minute.
- per order and client address: 5 failures. One address gets a few tries on an order, then
  one a minute.
- per order, from anywhere: 10 failures. It never refuses anyone by itself: once it is
  empty (the order is under attack), a failure empties that address's bucket for the order
  at once, so every address gets one guess a minute on that order instead of five.

While one of the caller's own buckets is empty, every attempt is refused (429), right or
wrong, so a refused guess learns nothing. No bucket shared with other addresses ever refuses
a caller, and a caller's own buckets earn a try back within 60 s: an owner at an address of
their own signs in at once however much others fail, and an owner who mistyped waits at most
a minute. (An attacker behind the owner's very address is indistinguishable from the owner.)

Per process, like the API's rate limit: with N replicas an attacker gets N times more.
"""

import time
from collections.abc import Callable

from returnstack.kit.ratelimit import TokenBuckets

ONE_A_MINUTE = 1 / 60
FAILURES_PER_CLIENT = 20
FAILURES_PER_ORDER_AND_CLIENT = 5
FAILURES_PER_ORDER = 10
# Buckets kept per kind (only those not full again: a bucket refills in at most 20 minutes).
# About 400 bytes each, so a flood of failures holds at most ~25 MB per process; beyond it
# the least recently failed are forgotten.
MAX_KEYS = 20_000


class GuestSignIns:
    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, max_keys: int = MAX_KEYS
    ) -> None:
        def buckets(burst: int) -> TokenBuckets:
            return TokenBuckets(ONE_A_MINUTE, burst, max_keys=max_keys, clock=clock)

        self.per_client = buckets(FAILURES_PER_CLIENT)
        self.per_order_and_client = buckets(FAILURES_PER_ORDER_AND_CLIENT)
        self.per_order = buckets(FAILURES_PER_ORDER)

    def wait(self, *, tenant_id: str, order_id: str, client: str) -> float:
        """0 when this client may try to sign in with this order now, else the seconds
        until it may (at most 60)."""
        return max(
            self.per_client.wait(f"{tenant_id}:{client}"),
            self.per_order_and_client.wait(f"{tenant_id}:{order_id}:{client}"),
        )

    def failed(self, *, tenant_id: str, order_id: str, client: str) -> None:
        self.per_client.drain(f"{tenant_id}:{client}")
        under_attack = self.per_order.drain(f"{tenant_id}:{order_id}") < 1
        self.per_order_and_client.drain(f"{tenant_id}:{order_id}:{client}", everything=under_attack)

    def size(self) -> int:
        """Buckets held (all three kinds)."""
        return len(self.per_client) + len(self.per_order_and_client) + len(self.per_order)
