"""POST /v1/events with bad input: a 4xx in the error shape that names what was wrong, and
nothing written (API.md 1, 3, 11; docs/api.md "Conventions")."""

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import func, select

from returnstack.app import create_app
from returnstack.kit.types import MAX_AMOUNT, MAX_QUANTITY
from returnstack.models import (
    Customer,
    CustomerEmail,
    Event,
    Order,
    OrderLine,
    OutboxEvent,
    Return,
    ReturnItem,
    Store,
)
from tests.conftest import DatabaseFixture, TenantFixture
from tests.factories import batch, item, purchase, return_event, unique

TENANT_TABLES = (
    Event,
    Order,
    OrderLine,
    Return,
    ReturnItem,
    OutboxEvent,
    Customer,
    CustomerEmail,
    Store,
)


def written(database: DatabaseFixture, tenant_id: str) -> dict[str, int]:
    """Rows the tenant has in every table an event can write to (only non-zero counts)."""
    counts = {}
    with database.db.transaction(write=False) as session:
        for model in TENANT_TABLES:
            n = session.scalar(
                select(func.count()).select_from(model).where(model.tenant_id == tenant_id)
            )
            if n:
                counts[model.__tablename__] = n
    return counts


def assert_error_shape(response: Response, status: int, kind: str) -> list[dict[str, Any]]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert error["type"] == kind
    assert isinstance(error["message"], str)
    assert error["message"]
    assert isinstance(error["details"], list)
    for detail in error["details"]:
        assert isinstance(detail["path"], str)
        assert isinstance(detail["message"], str)
        assert detail["message"]
    details: list[dict[str, Any]] = error["details"]
    return details


def names(paths: list[str], expected: str) -> bool:
    """`expected` is one of the paths, or a parent of one (events[0].store names .store.id)."""
    return any(p == expected or p.startswith((expected + ".", expected + "[")) for p in paths)


def minutes_ahead(minutes: float) -> str:
    return (datetime.now(UTC) + timedelta(minutes=minutes)).isoformat()


def without(event: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k not in keys}


def with_item(**fields: Any) -> dict[str, Any]:
    return purchase(items=[item(**fields)])


def item_without(key: str) -> dict[str, Any]:
    return purchase(items=[{k: v for k, v in item().items() if k != key}])


# (case id, event factory, path relative to the event that the error must name)
BAD_EVENTS: list[tuple[str, Callable[[], dict[str, Any]], str]] = [
    # wrong types
    ("quantity_string", lambda: with_item(quantity="2"), "items[0].quantity"),
    ("quantity_float", lambda: with_item(quantity=2.0), "items[0].quantity"),
    ("quantity_bool", lambda: with_item(quantity=True), "items[0].quantity"),
    ("unit_price_float", lambda: with_item(unit_price=1.5), "items[0].unit_price"),
    ("unit_price_string", lambda: with_item(unit_price="1999"), "items[0].unit_price"),
    ("unit_price_bool", lambda: with_item(unit_price=False), "items[0].unit_price"),
    ("id_number", lambda: purchase(id=123), "id"),
    ("order_id_number", lambda: purchase(order_id=1001), "order_id"),
    ("items_object", lambda: purchase(items={"0": item()}), "items"),
    ("customer_string", lambda: purchase(customer="cust_42"), "customer"),
    ("timestamp_number", lambda: purchase(timestamp=1_700_000_000), "timestamp"),
    ("timestamp_garbage", lambda: purchase(timestamp="yesterday"), "timestamp"),
    ("refund_amount_float", lambda: return_event(refund={"amount": 9.99}), "refund.amount"),
    # missing fields
    ("missing_id", lambda: without(purchase(), "id"), "id"),
    ("missing_timestamp", lambda: without(purchase(), "timestamp"), "timestamp"),
    ("missing_order_id", lambda: without(purchase(), "order_id"), "order_id"),
    ("missing_items", lambda: without(purchase(), "items"), "items"),
    ("missing_type", lambda: without(purchase(), "type"), "type"),
    ("missing_product_id", lambda: item_without("product_id"), "items[0].product_id"),
    ("missing_quantity", lambda: item_without("quantity"), "items[0].quantity"),
    ("missing_unit_price", lambda: item_without("unit_price"), "items[0].unit_price"),
    ("missing_store_id", lambda: purchase(channel="offline", store={"name": "X"}), "store.id"),
    ("missing_refund_amount", lambda: return_event(refund={"method": "cash"}), "refund.amount"),
    ("empty_items", lambda: purchase(items=[]), "items"),
    ("too_many_items", lambda: purchase(items=[item() for _ in range(501)]), "items"),
    # enumerations and codes
    ("unknown_type", lambda: purchase(type="refund"), "type"),
    ("null_type", lambda: purchase(type=None), "type"),
    ("unknown_currency", lambda: purchase(currency="XXY"), "currency"),
    ("currency_too_long", lambda: purchase(currency="EURO"), "currency"),
    ("unknown_channel", lambda: purchase(channel="mail"), "channel"),
    (
        "unknown_refund_method",
        lambda: return_event(refund={"amount": 1, "method": "btc"}),
        "refund",
    ),
    ("invalid_email", lambda: purchase(customer={"email": "not-an-email"}), "customer.email"),
    # quantities and amounts
    ("quantity_zero", lambda: with_item(quantity=0), "items[0].quantity"),
    ("quantity_negative", lambda: with_item(quantity=-1), "items[0].quantity"),
    ("quantity_above_limit", lambda: with_item(quantity=MAX_QUANTITY + 1), "items[0].quantity"),
    ("unit_price_negative", lambda: with_item(unit_price=-1), "items[0].unit_price"),
    ("unit_price_above_limit", lambda: with_item(unit_price=MAX_AMOUNT + 1), "items[0].unit_price"),
    ("quantity_beyond_int64", lambda: with_item(quantity=2**63), "items[0].quantity"),
    ("unit_price_beyond_int64", lambda: with_item(unit_price=2**64 + 1), "items[0].unit_price"),
    ("unit_price_huge", lambda: with_item(unit_price=10**40), "items[0].unit_price"),
    (
        "return_quantity_zero",
        lambda: return_event(items=[{"product_id": "A", "quantity": 0}]),
        "items[0].quantity",
    ),
    (
        "refund_above_limit",
        lambda: return_event(refund={"amount": MAX_AMOUNT + 1}),
        "refund.amount",
    ),
    # timestamps
    ("timestamp_without_offset", lambda: purchase(timestamp="2026-01-10T12:00:00"), "timestamp"),
    ("timestamp_date_only", lambda: purchase(timestamp="2026-01-10"), "timestamp"),
    ("timestamp_ten_minutes_ahead", lambda: purchase(timestamp=minutes_ahead(10)), "timestamp"),
    ("timestamp_next_year", lambda: purchase(timestamp=minutes_ahead(365 * 24 * 60)), "timestamp"),
    (
        "timestamp_before_year_one_in_utc",
        lambda: purchase(timestamp="0001-01-01T00:30:00+01:00"),
        "timestamp",
    ),
    (
        "timestamp_after_year_9999_in_utc",
        lambda: purchase(timestamp="9999-12-31T23:59:59-01:00"),
        "timestamp",
    ),
    # client ids
    ("id_129_chars", lambda: purchase(id="e" * 129), "id"),
    ("id_empty", lambda: purchase(id=""), "id"),
    ("order_id_129_chars", lambda: purchase(order_id="o" * 129), "order_id"),
    ("product_id_129_chars", lambda: with_item(product_id="p" * 129), "items[0].product_id"),
    ("line_id_129_chars", lambda: with_item(line_id="l" * 129), "items[0].line_id"),
    ("customer_id_129_chars", lambda: purchase(customer={"id": "c" * 129}), "customer.id"),
    # unknown fields (strict)
    ("unknown_event_field", lambda: purchase(coupon="X"), "coupon"),
    ("unknown_item_field", lambda: with_item(color="red"), "items[0].color"),
    (
        "unknown_customer_field",
        lambda: purchase(customer={"id": "c1", "phone": "+49"}),
        "customer.phone",
    ),
    (
        "unknown_store_field",
        lambda: purchase(channel="offline", store={"id": "s1", "phone": "+49"}),
        "store.phone",
    ),
    (
        "unknown_refund_field",
        lambda: return_event(refund={"amount": 1, "tax": 0}),
        "refund.tax",
    ),
    (
        "unknown_return_item_field",
        lambda: return_event(items=[{"product_id": "A", "quantity": 1, "sku": "A"}]),
        "items[0].sku",
    ),
    # rules across fields
    ("offline_without_store", lambda: purchase(channel="offline"), "store"),
    ("return_without_customer", lambda: without(return_event(), "customer"), "customer"),
    ("return_with_empty_customer", lambda: return_event(customer={}), "customer"),
    ("return_with_only_a_name", lambda: return_event(customer={"name": "Ann"}), "customer"),
    (
        "duplicate_line_id",
        lambda: purchase(items=[item(line_id="1"), item(line_id="1")]),
        "items[1].line_id",
    ),
]


@pytest.mark.parametrize(
    ("make_event", "path"), [c[1:] for c in BAD_EVENTS], ids=[c[0] for c in BAD_EVENTS]
)
def test_bad_event_is_rejected_naming_its_path_and_nothing_is_written(
    client: TestClient,
    tenant: TenantFixture,
    database: DatabaseFixture,
    make_event: Callable[[], dict[str, Any]],
    path: str,
) -> None:
    event = make_event()
    response = client.post("/v1/events", json=batch(event), headers=tenant.headers)
    details = assert_error_shape(response, 422, "validation_failed")
    assert written(database, tenant.id) == {}
    if isinstance(event.get("order_id"), str):
        lookup = client.get(f"/v1/orders/{event['order_id']}", headers=tenant.headers)
        assert lookup.status_code in (400, 404)
    paths = [detail["path"] for detail in details]
    assert all(p.startswith("events[0]") for p in paths), paths
    assert names(paths, f"events[0].{path}"), paths


ACCEPTED_EDGES: list[tuple[str, Callable[[], dict[str, Any]]]] = [
    ("id_128_chars", lambda: purchase(id=unique("e").ljust(128, "x"))),
    ("order_id_128_chars", lambda: purchase(order_id=unique("o").ljust(128, "x"))),
    ("timestamp_two_minutes_ahead", lambda: purchase(timestamp=minutes_ahead(2))),
    ("timestamp_with_offset", lambda: purchase(timestamp="2026-01-10T12:00:00-05:00")),
    ("quantity_at_limit", lambda: with_item(quantity=MAX_QUANTITY)),
    ("unit_price_at_limit", lambda: with_item(unit_price=MAX_AMOUNT)),
    ("unit_price_zero", lambda: with_item(unit_price=0)),
    ("five_hundred_items", lambda: purchase(items=[item() for _ in range(500)])),
    ("minimal_online_purchase", lambda: without(purchase(), "customer", "currency", "channel")),
    ("return_with_customer_id_only", lambda: return_event(customer={"id": "cust-1"})),
    ("return_with_email_only", lambda: return_event(customer={"email": "a@example.com"})),
]


@pytest.mark.parametrize(
    "make_event", [c[1] for c in ACCEPTED_EDGES], ids=[c[0] for c in ACCEPTED_EDGES]
)
def test_edge_values_are_accepted(
    client: TestClient,
    tenant: TenantFixture,
    database: DatabaseFixture,
    make_event: Callable[[], dict[str, Any]],
) -> None:
    event = make_event()
    response = client.post("/v1/events", json=batch(event), headers=tenant.headers)
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 1
    assert written(database, tenant.id)["events"] == 1


def test_lower_case_currency_is_accepted_and_stored_upper_case(
    client: TestClient, tenant: TenantFixture
) -> None:
    event = purchase(currency="usd")
    response = client.post("/v1/events", json=batch(event), headers=tenant.headers)
    assert response.status_code == 200, response.text
    order = client.get(f"/v1/orders/{event['order_id']}", headers=tenant.headers).json()
    assert order["currency"] == "USD"


NOT_JSON: list[tuple[str, bytes]] = [
    ("text", b"events please"),
    ("empty", b""),
    ("truncated", b'{"events": [{"type": "purchase"'),
    ("trailing_comma", b'{"events": [],}'),
    ("invalid_utf8", b'{"events": ["\xff\xfe"]}'),
    ("nan", b'{"events": [{"type": "purchase", "quantity": NaN}]}'),
]


@pytest.mark.parametrize("body", [c[1] for c in NOT_JSON], ids=[c[0] for c in NOT_JSON])
def test_a_body_that_is_not_json_is_400(
    client: TestClient, tenant: TenantFixture, database: DatabaseFixture, body: bytes
) -> None:
    response = client.post(
        "/v1/events",
        content=body,
        headers={**tenant.headers, "Content-Type": "application/json"},
    )
    assert_error_shape(response, 400, "invalid_request")
    assert written(database, tenant.id) == {}


BAD_DOCUMENTS: list[tuple[str, Any, str]] = [
    ("list", [purchase()], ""),
    ("string", "events", ""),
    ("null", None, ""),
    ("number", 1, ""),
    ("no_events", {}, "events"),
    ("events_null", {"events": None}, "events"),
    ("events_object", {"events": {"0": purchase()}}, "events"),
    ("events_empty", {"events": []}, "events"),
    ("event_not_object", {"events": ["purchase"]}, "events[0]"),
    ("unknown_top_level_field", {"events": [purchase()], "dry_run": True}, "dry_run"),
]


@pytest.mark.parametrize(
    ("document", "path"), [c[1:] for c in BAD_DOCUMENTS], ids=[c[0] for c in BAD_DOCUMENTS]
)
def test_a_body_of_the_wrong_shape_is_422(
    client: TestClient, tenant: TenantFixture, database: DatabaseFixture, document: Any, path: str
) -> None:
    response = client.post(
        "/v1/events",
        content=orjson.dumps(document),
        headers={**tenant.headers, "Content-Type": "application/json"},
    )
    details = assert_error_shape(response, 422, "validation_failed")
    assert path in [detail["path"] for detail in details]
    assert written(database, tenant.id) == {}


def test_one_bad_event_rejects_the_whole_request(
    client: TestClient, tenant: TenantFixture, database: DatabaseFixture
) -> None:
    good = [purchase(), return_event(), purchase()]
    bad_quantity = with_item(quantity="2")
    bad_twice = purchase(currency="XXY", timestamp="2026-01-10T12:00:00")
    bad_type = {"type": "refund", "id": unique("x")}
    events = [good[0], bad_quantity, good[1], bad_twice, good[2], bad_type]
    response = client.post("/v1/events", json=batch(*events), headers=tenant.headers)
    details = assert_error_shape(response, 422, "validation_failed")
    paths = sorted(detail["path"] for detail in details)
    assert paths == [
        "events[1].items[0].quantity",
        "events[3].currency",
        "events[3].timestamp",
        "events[5].type",
    ]
    assert written(database, tenant.id) == {}
    for event in good:
        if event["type"] == "purchase":
            lookup = client.get(f"/v1/orders/{event['order_id']}", headers=tenant.headers)
            assert lookup.status_code == 404

    # Nothing was recorded, so sending the good ones now accepts them all (no duplicates).
    retry = client.post("/v1/events", json=batch(*good), headers=tenant.headers)
    assert retry.status_code == 200, retry.text
    assert retry.json()["accepted"] == 3
    assert retry.json()["duplicates"] == 0


def test_more_than_a_thousand_events_is_413(
    client: TestClient, tenant: TenantFixture, database: DatabaseFixture
) -> None:
    events = [purchase() for _ in range(1001)]
    response = client.post("/v1/events", json=batch(*events), headers=tenant.headers)
    assert_error_shape(response, 413, "payload_too_large")
    assert written(database, tenant.id) == {}


@pytest.fixture
def small_client(database: DatabaseFixture) -> Any:
    settings = database.settings.model_copy(update={"max_body_bytes": 4096})
    app = create_app(settings, database=database.db)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def test_a_body_over_the_size_limit_is_413(
    small_client: TestClient, tenant: TenantFixture, database: DatabaseFixture
) -> None:
    fits = batch(purchase())
    assert len(orjson.dumps(fits)) < 4096
    big = batch(*[purchase() for _ in range(30)])
    assert len(orjson.dumps(big)) > 4096

    response = small_client.post("/v1/events", json=big, headers=tenant.headers)
    assert_error_shape(response, 413, "payload_too_large")
    assert written(database, tenant.id) == {}

    # The same without a Content-Length (chunked): the limit holds while reading.
    chunks = [orjson.dumps(big)[i : i + 1000] for i in range(0, len(orjson.dumps(big)), 1000)]
    streamed = small_client.post(
        "/v1/events",
        content=iter(chunks),
        headers={**tenant.headers, "Content-Type": "application/json"},
    )
    assert "content-length" not in {k.lower() for k in streamed.request.headers}
    assert_error_shape(streamed, 413, "payload_too_large")
    assert written(database, tenant.id) == {}

    accepted = small_client.post("/v1/events", json=fits, headers=tenant.headers)
    assert accepted.status_code == 200, accepted.text


def test_a_body_over_the_default_five_megabytes_is_413(
    client: TestClient, tenant: TenantFixture, database: DatabaseFixture
) -> None:
    event = purchase(items=[item(name="x" * 400) for _ in range(500)])
    huge = batch(*[event | {"id": unique("p")} for _ in range(30)])
    body = orjson.dumps(huge)
    assert len(body) > 5 * 1024 * 1024
    response = client.post(
        "/v1/events", content=body, headers={**tenant.headers, "Content-Type": "application/json"}
    )
    assert_error_shape(response, 413, "payload_too_large")
    assert written(database, tenant.id) == {}


NUL_FIELDS: list[tuple[str, Callable[[], dict[str, Any]], str]] = [
    ("id", lambda: purchase(id=unique("e") + "\u0000"), "id"),
    ("order_id", lambda: purchase(order_id=unique("o") + "\u0000"), "order_id"),
    ("product_id", lambda: with_item(product_id="SKU\u00001"), "items[0].product_id"),
    ("item_name", lambda: with_item(name="Tee\u0000"), "items[0].name"),
    ("customer_id", lambda: purchase(customer={"id": "c\u00001"}), "customer.id"),
    (
        "store_name",
        lambda: purchase(channel="offline", store={"id": "s1", "name": "A\u0000B"}),
        "store.name",
    ),
    (
        "return_note",
        lambda: return_event(items=[{"product_id": "A", "quantity": 1, "note": "\u0000"}]),
        "items[0].note",
    ),
]


@pytest.mark.parametrize(
    ("make_event", "path"), [c[1:] for c in NUL_FIELDS], ids=[c[0] for c in NUL_FIELDS]
)
def test_a_nul_character_in_a_string_is_rejected_not_a_500(
    client: TestClient,
    tenant: TenantFixture,
    database: DatabaseFixture,
    make_event: Callable[[], dict[str, Any]],
    path: str,
) -> None:
    """PostgreSQL cannot store U+0000 in text; both backends must answer the same way, so the
    only consistent answer is a 422 naming the field (never a 500, never stored on one
    backend and refused on the other)."""
    response = client.post("/v1/events", json=batch(make_event()), headers=tenant.headers)
    assert response.status_code != 500, response.text
    details = assert_error_shape(response, 422, "validation_failed")
    assert written(database, tenant.id) == {}
    assert names([d["path"] for d in details], f"events[0].{path}")


def test_looking_up_an_order_id_with_a_nul_character_is_not_a_500(
    client: TestClient, tenant: TenantFixture
) -> None:
    response = client.get("/v1/orders/o%00x", headers=tenant.headers)
    assert response.status_code in (400, 404), response.text
    assert response.json()["error"]["type"] in ("invalid_request", "not_found")
