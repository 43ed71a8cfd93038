"""Small factories for request bodies, with keyword defaults."""

import itertools
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

_counter = itertools.count(1)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def ts(days_ago: float = 1.0) -> str:
    return (datetime.now(UTC) - timedelta(days=days_ago)).isoformat().replace("+00:00", "Z")


def item(**overrides: Any) -> dict[str, Any]:
    number = next(_counter)
    return {
        "line_id": str(number),
        "product_id": f"SKU-{number}",
        "quantity": 1,
        "unit_price": 1999,
        "name": "Tee",
        "category": "Apparel/Tops",
    } | overrides


def purchase(**overrides: Any) -> dict[str, Any]:
    return {
        "type": "purchase",
        "id": unique("p"),
        "timestamp": ts(),
        "channel": "online",
        "customer": {"id": unique("cust"), "email": f"{unique('u')}@example.com"},
        "order_id": unique("o"),
        "currency": "EUR",
        "items": [item()],
    } | overrides


def return_event(**overrides: Any) -> dict[str, Any]:
    return {
        "type": "return",
        "id": unique("r"),
        "timestamp": ts(0.5),
        "channel": "online",
        "customer": {"email": f"{unique('u')}@example.com"},
        "order_id": unique("o"),
        "currency": "EUR",
        "items": [{"product_id": "SKU-1", "quantity": 1, "reason": "size_too_small"}],
    } | overrides


def batch(*events: dict[str, Any]) -> dict[str, Any]:
    return {"events": list(events)}
