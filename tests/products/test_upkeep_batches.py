"""The product-signal upkeep on whole batches: a transaction's figures are summed per
product, breakdown key, reason and category path, and each row is written once; the kept
figures must be those of the events one by one (worked out by hand below) and of a rebuild
from the facts. On PostgreSQL, two transactions adding to the same products, listed in
opposite orders, neither deadlock nor lose a unit (rows are written in key order)."""

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import TypeAdapter

from returnstack.events.schemas import Event, Trust
from returnstack.events.service import record_events
from returnstack.products.rebuild import rebuild
from tests.conftest import DatabaseFixture, TenantFixture
from tests.factories import batch, unique
from tests.products.test_products import ProductsApi, api, check_rebuild, stats

EVENTS = TypeAdapter(list[Event])
__all__ = ["api"]  # the fixture, shared with test_products
START = datetime(2026, 5, 1, tzinfo=UTC)


def _purchase(
    order_id: str, at: datetime, items: list[dict[str, Any]], *, store: str | None = None
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "purchase",
        "id": unique("p"),
        "timestamp": at.isoformat(),
        "channel": "offline" if store else "online",
        "customer": {"id": unique("cust")},
        "order_id": order_id,
        "currency": "EUR",
        "items": items,
    }
    if store:
        event["store"] = {"id": store}
    return event


def _line(
    number: int, product: str, variant: str, quantity: int, category: str | None
) -> dict[str, Any]:
    line = {
        "line_id": str(number),
        "product_id": product,
        "variant_id": variant,
        "quantity": quantity,
        "unit_price": 1000,
    }
    return line if category is None else line | {"category": category}


def test_one_batch_of_many_events_on_one_product_counts_each_once(api: ProductsApi) -> None:
    """Batch 1: 12 orders of product X (and one of Y), online and in two stores, variants
    S and M, under Apparel/Tops then (the later ones) Apparel/Shirts. Batch 2: returns of
    four of those orders with three reasons and refunds, and 3 more units sold, all in one
    transaction."""
    x, y = unique("X"), unique("Y")
    stores = [unique("store"), unique("store")]
    orders = [unique("o") for _ in range(12)]
    first = []
    for number, order_id in enumerate(orders):
        # Orders 0-5 online, 6-8 in store 0, 9-11 in store 1; 2 units each; variant S for
        # even orders, M for odd; the category of the latest order (11) wins.
        store = None if number < 6 else stores[0] if number < 9 else stores[1]
        category = "Apparel/Tops" if number < 8 else "Apparel/Shirts"
        lines = [_line(1, x, f"{x}-{'SM'[number % 2]}", 2, category)]
        if number == 0:
            lines.append(_line(2, y, f"{y}-S", 5, "Home"))
        first.append(_purchase(order_id, START + timedelta(hours=number), lines, store=store))
    assert api.post("/v1/events", batch(*first)).status_code == 200

    def back(
        order_id: str, variant: str, quantity: int, reason: str, refund: int, store: str | None
    ) -> Any:
        event: dict[str, Any] = {
            "type": "return",
            "id": unique("r"),
            "timestamp": (START + timedelta(days=3)).isoformat(),
            "channel": "offline" if store else "online",
            "customer": {"id": unique("cust")},
            "order_id": order_id,
            "currency": "EUR",
            "items": [
                {"product_id": x, "variant_id": f"{x}-{variant}", "quantity": quantity}
                | {"reason": reason}
            ],
            "refund": {"amount": refund},
        }
        if store:
            event["store"] = {"id": store}
        return event

    second = [
        back(orders[0], "S", 1, "size_too_small", 500, None),
        back(orders[1], "M", 2, "size_too_small", 1500, None),
        back(orders[6], "S", 1, "defective", 700, stores[0]),
        back(orders[9], "M", 2, "unwanted", 0, stores[1]),
        _purchase(unique("o"), START + timedelta(days=4), [_line(1, x, f"{x}-S", 3, None)]),
    ]
    assert api.post("/v1/events", batch(*second)).status_code == 200

    body = stats(api, x)
    # Sold 12 x 2 + 3 = 27; back 1 + 2 + 1 + 2 = 6; refunded 500 + 1500 + 700 = 2700.
    assert (body["units_sold"], body["units_returned"]) == (27, 6)
    assert body["refunded"] == {"EUR": 2700}
    assert body["reasons"] == {"defective": 1, "size_too_small": 3, "unwanted": 2}
    # The last line has no category: the latest line that names one (order 11) wins.
    assert body["category"] == "Apparel/Shirts"
    # S: orders 0 2 4 6 8 10 (12 units) + 3 = 15 sold, back 1 + 1 = 2; M: 12 sold, back 4.
    assert body["by_variant"] == {
        f"{x}-M": {"units_sold": 12, "units_returned": 4, "return_rate": 4 / 12},
        f"{x}-S": {"units_sold": 15, "units_returned": 2, "return_rate": 2 / 15},
    }
    # Online: orders 0-5 (12 units) + 3; offline: 6-11 (12 units).
    assert body["by_channel"] == {
        "offline": {"units_sold": 12, "units_returned": 3, "return_rate": 3 / 12},
        "online": {"units_sold": 15, "units_returned": 3, "return_rate": 3 / 15},
    }
    assert body["by_store"] == {
        stores[0]: {"units_sold": 6, "units_returned": 1, "return_rate": 1 / 6},
        stores[1]: {"units_sold": 6, "units_returned": 2, "return_rate": 2 / 6},
    }
    # The rollups of X's path: X under Apparel/Shirts (its category was settled within
    # batch 1, so nothing was added under Apparel/Tops); Y under Home. The tenant's root
    # (32 units) is compared by the rebuild.
    rollups = {row["path"]: row["units_sold"] for row in body["categories"]}
    assert rollups == {"Apparel/Shirts": 27, "Apparel": 27}
    y_stats = stats(api, y)
    assert y_stats["units_sold"] == 5
    assert {row["path"]: row["units_sold"] for row in y_stats["categories"]} == {"Home": 5}
    check_rebuild(api.database, api.tenant)


@pytest.fixture
def postgresql_only(database: DatabaseFixture) -> None:
    if database.backend != "postgresql":
        pytest.skip("SQLite has one writer at a time: no two transactions interleave")


def test_two_transactions_on_the_same_products_in_opposite_orders_do_not_deadlock(
    postgresql_only: None, database: DatabaseFixture, tenant: TenantFixture
) -> None:
    """Both transactions record their facts, then commit at the same moment: each writes
    its product, breakdown and category rows in key order, so the second waits for the
    first instead of holding a row the first needs."""
    products = sorted(unique("SKU") for _ in range(6))
    barrier = threading.Barrier(2, timeout=30)
    errors: list[BaseException] = []

    def run(order: list[str], quantity: int) -> None:
        lines = [
            _line(number + 1, product, f"{product}-S", quantity, f"Cat{number % 2}")
            for number, product in enumerate(order)
        ]
        events = EVENTS.validate_python([_purchase(unique("o"), START, lines)])
        try:
            with database.db.transaction() as session:
                record_events(
                    session,
                    tenant_id=tenant.id,
                    default_currency="EUR",
                    events=events,
                    source="test",
                    actor="test",
                    trust=Trust.verified,
                )
                barrier.wait()  # both have collected their figures, neither has written
                session.commit()
        except BaseException as exc:  # (the test reports it)
            errors.append(exc)
            barrier.abort()

    threads = [
        threading.Thread(target=run, args=(products, 1)),
        threading.Thread(target=run, args=(products[::-1], 2)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    with database.db.transaction() as session:
        report = rebuild(session, tenant_id=tenant.id, write=False)
    assert report.differences == 0, report.examples
    assert report.products == len(products)
