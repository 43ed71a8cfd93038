"""Reported (publishable-key) events written the way the trust code stores them: rows of
`reported_events` and `reported_items`, counted in product signals in one transaction."""

from datetime import UTC, datetime
from typing import Any

from returnstack.kit.bulk import insert_rows
from returnstack.kit.ids import new_id
from returnstack.models import ReportedEvent, ReportedItem
from returnstack.products.upkeep import count_reported
from tests.conftest import DatabaseFixture, TenantFixture


def report_events(
    database: DatabaseFixture, tenant: TenantFixture, events: list[dict[str, Any]]
) -> None:
    now = datetime.now(UTC)
    rows, items = [], []
    for event in events:
        rows.append(
            {
                "tenant_id": tenant.id,
                "client_id": event["id"],
                "id": new_id("evt"),
                "type": event["type"],
                "order_id": event.get("order_id", "o-reported"),
                "channel": event["channel"],
                "store_id": event.get("store"),
                "currency": event["currency"],
                "refund_amount": event.get("refund"),
                "occurred_at": datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")),
                "received_at": now,
                "source": "api",
            }
        )
        for position, item in enumerate(event["items"], start=1):
            items.append(
                {
                    "tenant_id": tenant.id,
                    "event_client_id": event["id"],
                    "position": position,
                    "product_id": item["product_id"],
                    "variant_id": item.get("variant_id"),
                    "category": item.get("category"),
                    "quantity": item["quantity"],
                    "unit_price": item.get("unit_price"),
                    "reason": item.get("reason"),
                }
            )
    with database.db.transaction() as session:
        insert_rows(session, ReportedEvent, rows)
        insert_rows(session, ReportedItem, items)
        count_reported(session, tenant_id=tenant.id, events=rows, items=items)
