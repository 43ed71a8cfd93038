"""The events sent by the benchmark: purchases with unique ids, written as request bodies.

Ids carry the phase as a prefix (`w` warm-up, `m` measured, `s` one-event requests), so the
rows written for the measured phase can be told apart in the database afterwards.
"""

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

CATEGORIES = [
    "Apparel/Tops",
    "Apparel/Bottoms",
    "Apparel/Dresses",
    "Shoes/Sneakers",
    "Shoes/Boots",
    "Accessories/Bags",
    "Home/Kitchen",
]
CITIES = [("Lyon", "FR"), ("Berlin", "DE"), ("Madrid", "ES"), ("Leeds", "GB"), ("Turin", "IT")]
STORES = 40
PRODUCTS = 5000
OFFLINE_SHARE = 0.3


def _timestamp(rng: random.Random, now: datetime) -> str:
    moment = now - timedelta(seconds=rng.randrange(60, 30 * 86400))
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _store(number: int) -> dict[str, Any]:
    city, country = CITIES[number % len(CITIES)]
    return {
        "id": f"store-{number:03d}",
        "name": f"{city} {number}",
        "city": city,
        "country": country,
    }


def _item(rng: random.Random, position: int) -> dict[str, Any]:
    product = rng.randrange(PRODUCTS)
    return {
        "line_id": str(position),
        "product_id": f"SKU-{product:05d}",
        "variant_id": f"SKU-{product:05d}-{rng.choice('SMLX')}",
        "quantity": rng.randint(1, 3),
        "unit_price": rng.randrange(500, 20000),
        "name": f"Product {product}",
        "category": CATEGORIES[product % len(CATEGORIES)],
    }


def purchase(
    phase: str, number: int, rng: random.Random, now: datetime, lines: int = 3
) -> dict[str, Any]:
    """One purchase: unique event, order and customer (id and email); 30% in a store."""
    offline = rng.random() < OFFLINE_SHARE
    event: dict[str, Any] = {
        "type": "purchase",
        "id": f"{phase}p-{number:09d}",
        "timestamp": _timestamp(rng, now),
        "channel": "offline" if offline else "online",
        "order_id": f"{phase}o-{number:09d}",
        "currency": "EUR",
        "customer": {
            "id": f"{phase}c-{number:09d}",
            "email": f"{phase}c-{number:09d}@example.com",
        },
        "items": [_item(rng, position) for position in range(1, lines + 1)],
    }
    if offline:
        event["store"] = _store(rng.randrange(STORES))
    return event


def _store_key(event: dict[str, Any]) -> str:
    return str(event["store"]["id"]) if "store" in event else ""


def bodies(
    phase: str,
    *,
    events: int,
    per_request: int,
    lines: int | None = 3,
    seed: int = 1,
    sort_stores: bool = False,
) -> Iterator[bytes]:
    """Request bodies of `per_request` purchases (`lines` lines each; None: 1 to 3).

    With `sort_stores`, the events of a body are ordered by store id, so every request names
    its stores in the same order (before bf502cd, concurrent batches naming the same stores
    in different orders deadlocked on PostgreSQL; see README, "Known problems").
    """
    rng = random.Random(f"{phase}:{seed}")
    now = datetime.now(UTC)
    batch: list[dict[str, Any]] = []

    def body() -> bytes:
        if sort_stores:
            batch.sort(key=_store_key)
        return orjson.dumps({"events": batch})

    for number in range(events):
        count = lines if lines is not None else rng.randint(1, 3)
        batch.append(purchase(phase, number, rng, now, count))
        if len(batch) == per_request:
            yield body()
            batch = []
    if batch:
        yield body()


def write_body_files(directory: Path, bodies: Iterator[bytes], clients: int) -> list[Path]:
    """Deal the bodies round-robin into one file per client, one body per line."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"bodies-{index}.txt" for index in range(1, clients + 1)]
    handles = [path.open("wb") for path in paths]
    counts = [0] * clients
    try:
        for index, body in enumerate(bodies):
            handles[index % clients].write(body + b"\n")
            counts[index % clients] += 1
    finally:
        for handle in handles:
            handle.close()
    return [path for path, count in zip(paths, counts, strict=True) if count]
