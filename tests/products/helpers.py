"""Reported (publishable-key) events sent through POST /v1/events, as a storefront or a
till would send them."""

from typing import Any

import httpx

from tests.conftest import TenantFixture


def report_events(http: httpx.Client, tenant: TenantFixture, events: list[dict[str, Any]]) -> None:
    """Send events given as {type, id, timestamp, channel, store (an id or None), currency,
    refund (an amount or None), items: [{product_id, variant_id, quantity, unit_price,
    reason, category}]} with the tenant's publishable key; all must be accepted."""
    body = []
    for event in events:
        native: dict[str, Any] = {
            "type": event["type"],
            "id": event["id"],
            "timestamp": event["timestamp"],
            "channel": event["channel"],
            "customer": {"email": "someone@example.com"},
            "order_id": event.get("order_id", "o-reported"),
            "currency": event["currency"],
            "items": [
                {key: value for key, value in item.items() if value is not None}
                for item in event["items"]
            ],
        }
        if event.get("store"):
            native["store"] = {"id": event["store"]}
        if event.get("refund") is not None:
            native["refund"] = {"amount": event["refund"], "method": "original_payment"}
        if event["type"] == "purchase":  # a purchase's items carry a price
            for item in native["items"]:
                item.setdefault("unit_price", 0)
        body.append(native)
    response = http.post("/v1/events", json={"events": body}, headers=tenant.publishable_headers)
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == len(events), response.text
