"""The transactional outbox: every recorded fact writes its domain event in the same
transaction, so facts and their news commit or vanish together (API.md 7; docs/api.md)."""

import hashlib
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from returnstack.events.schemas import Trust
from returnstack.events.service import record_events
from returnstack.events.validation import check_batch
from returnstack.kit import bulk
from returnstack.models import Event, Order, OrderLine, OutboxEvent, Return, ReturnItem
from returnstack.outbox.service import resource_key
from tests.conftest import DatabaseFixture, TenantFixture
from tests.factories import batch, item, purchase, return_event, unique


def outbox(database: DatabaseFixture, tenant_id: str) -> list[OutboxEvent]:
    with database.db.transaction(write=False) as session:
        return list(
            session.scalars(
                select(OutboxEvent)
                .where(OutboxEvent.tenant_id == tenant_id)
                .order_by(OutboxEvent.created_at, OutboxEvent.id)
            )
        )


def facts(database: DatabaseFixture, tenant_id: str) -> dict[str, int]:
    """Non-zero row counts of the tenant's facts and outbox."""
    counts = {}
    with database.db.transaction(write=False) as session:
        for model in (Event, Order, OrderLine, Return, ReturnItem, OutboxEvent):
            n = session.scalar(
                select(func.count()).select_from(model).where(model.tenant_id == tenant_id)
            )
            if n:
                counts[model.__tablename__] = n
    return counts


def send(client: TestClient, tenant: TenantFixture, *events: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/v1/events", json=batch(*events), headers=tenant.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_a_purchase_records_one_purchase_recorded_message(
    client: TestClient, tenant: TenantFixture, database: DatabaseFixture
) -> None:
    sale = purchase(
        timestamp="2026-04-01T12:00:00+02:00",
        channel="offline",
        store={"id": "s-1", "name": "Mitte", "city": "Berlin", "country": "DE"},
        customer={"id": "cust-1", "email": "Ann@Example.com"},
        items=[
            item(
                line_id="1", product_id="SKU-1", variant_id="SKU-1-M", quantity=2, unit_price=1799
            ),
            item(line_id="2", product_id="SKU-2", quantity=1, unit_price=500),
        ],
    )
    body = send(client, tenant, sale)
    [message] = outbox(database, tenant.id)
    assert message.type == "purchase.recorded"
    assert message.id.startswith("msg_")
    assert message.dispatched_at is None
    data = message.data
    assert data["event_id"] == body["ids"][0]
    assert data["order_id"] == sale["order_id"]
    assert data["customer"] == {"id": "cust-1", "email": "ann@example.com"}
    assert data["channel"] == "offline"
    assert data["store"] == {"id": "s-1", "name": "Mitte", "city": "Berlin", "country": "DE"}
    assert data["currency"] == "EUR"
    assert data["placed_at"] == "2026-04-01T10:00:00Z"
    assert [
        (
            line["line_id"],
            line["product_id"],
            line["variant_id"],
            line["quantity"],
            line["unit_price"],
        )
        for line in data["lines"]
    ] == [("1", "SKU-1", "SKU-1-M", 2, 1799), ("2", "SKU-2", None, 1, 500)]


def test_a_return_records_one_return_recorded_message(
    client: TestClient, tenant: TenantFixture, database: DatabaseFixture
) -> None:
    ret = return_event(
        timestamp="2026-04-03T09:30:00Z",
        customer={"email": "bob@example.com"},
        items=[
            {"product_id": "SKU-1", "quantity": 1, "reason": "defective"},
            {"product_id": "SKU-2", "quantity": 2, "reason": "Too big honestly"},
        ],
        refund={"amount": 2500},
    )
    send(client, tenant, ret)
    [message] = outbox(database, tenant.id)
    assert message.type == "return.recorded"
    data = message.data
    with database.db.transaction(write=False) as session:
        [row] = session.scalars(select(Return).where(Return.tenant_id == tenant.id)).all()
    assert data["id"] == row.id
    assert data["status"] == "closed"
    assert data["source"] == "event"
    assert data["customer"] == {"id": None, "email": "bob@example.com"}
    assert data["currency"] == "EUR"
    assert data["refund"]["amount"] == 2500
    assert data["refund"]["method"] == "original_payment"
    assert data["closed_at"] == "2026-04-03T09:30:00Z"
    assert [
        (i["order_id"], i["product_id"], i["quantity"], i["reason"], i["note"])
        for i in data["items"]
    ] == [
        (ret["order_id"], "SKU-1", 1, "defective", None),
        (ret["order_id"], "SKU-2", 2, "other", "Too big honestly"),
    ]


def test_one_message_per_new_event_and_none_for_duplicates(
    client: TestClient, tenant: TenantFixture, database: DatabaseFixture
) -> None:
    sales = [purchase() for _ in range(3)]
    ret = return_event(order_id=sales[0]["order_id"])
    send(client, tenant, *sales, ret, sales[1])
    types = sorted(message.type for message in outbox(database, tenant.id))
    assert types == ["purchase.recorded"] * 3 + ["return.recorded"]
    send(client, tenant, *sales, ret)
    assert len(outbox(database, tenant.id)) == 4


def test_a_rejected_request_records_nothing(
    client: TestClient, tenant: TenantFixture, database: DatabaseFixture
) -> None:
    response = client.post(
        "/v1/events",
        json=batch(purchase(), return_event(), purchase(currency="XXY")),
        headers=tenant.headers,
    )
    assert response.status_code == 422
    assert facts(database, tenant.id) == {}


def test_partial_records_messages_only_for_the_valid_events(
    client: TestClient, tenant: TenantFixture, database: DatabaseFixture
) -> None:
    good = purchase()
    response = client.post(
        "/v1/events",
        json=batch(purchase(currency="XXY"), good),
        headers=tenant.headers,
        params={"partial": "true"},
    )
    assert response.status_code == 200, response.text
    [message] = outbox(database, tenant.id)
    assert message.data["order_id"] == good["order_id"]


def _validated(*events: dict[str, Any]) -> list[Any]:
    checked = check_batch(list(events))
    assert checked.rejected == []
    return list(checked.valid)


def test_a_transaction_that_fails_after_recording_leaves_no_facts_and_no_messages(
    tenant: TenantFixture, database: DatabaseFixture
) -> None:
    sale = purchase()
    events = _validated(sale, return_event(order_id=sale["order_id"]))

    class Boom(Exception):
        pass

    inside: list[int] = []

    def record_then_fail() -> None:
        with database.db.transaction() as session:
            result = record_events(
                session,
                tenant_id=tenant.id,
                default_currency="EUR",
                events=events,
                source="api",
                actor="test",
                trust=Trust.verified,
            )
            assert result.accepted == 2
            session.flush()
            # Inside the transaction the facts and their messages are there ...
            inside.append(
                session.scalar(
                    select(func.count())
                    .select_from(OutboxEvent)
                    .where(OutboxEvent.tenant_id == tenant.id)
                )
                or 0
            )
            raise Boom

    with pytest.raises(Boom):
        record_then_fail()
    assert inside == [2]
    # ... and after the failure neither is.
    assert facts(database, tenant.id) == {}

    # The same work committed leaves both, so the check above can tell the difference.
    with database.db.transaction() as session:
        record_events(
            session,
            tenant_id=tenant.id,
            default_currency="EUR",
            events=events,
            source="api",
            actor="test",
            trust=Trust.verified,
        )
    assert facts(database, tenant.id) == {
        "events": 2,
        "orders": 1,
        "order_lines": 1,
        "returns": 1,
        "return_items": 1,
        "outbox": 2,
    }


def test_a_request_that_fails_after_writing_leaves_no_facts_and_no_messages(
    client: TestClient,
    tenant: TenantFixture,
    database: DatabaseFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Over HTTP: the request records facts and messages, then the last statement of the
    request (storing the Idempotency-Key response) fails. The client gets a 500 and the
    database keeps nothing of the request."""
    sale = purchase()
    body = batch(sale, return_event(order_id=sale["order_id"]))
    key = unique("idem")
    seen: list[str] = []
    execute = bulk._execute

    def failing_execute(session: Any, model: Any, rows: Any, suffix: str, **kw: Any) -> Any:
        seen.append(model.__tablename__)
        if model.__tablename__ == "idempotency_keys":
            raise RuntimeError("injected failure after the work was written")
        return execute(session, model, rows, suffix, **kw)

    monkeypatch.setattr(bulk, "_execute", failing_execute)
    try:
        response = client.post(
            "/v1/events", json=body, headers={**tenant.headers, "Idempotency-Key": key}
        )
    finally:
        monkeypatch.undo()

    assert response.status_code == 500
    error = response.json()["error"]
    assert error["type"]
    assert error["message"]
    # The failure came after the facts and the outbox rows were written in that transaction.
    assert {"events", "orders", "returns", "outbox"} <= set(seen), seen
    assert facts(database, tenant.id) == {}

    # The client's retry with the same key does the work now (the key was not used up).
    retry = client.post("/v1/events", json=body, headers={**tenant.headers, "Idempotency-Key": key})
    assert retry.status_code == 200, retry.text
    assert retry.json()["accepted"] == 2
    assert sorted(m.type for m in outbox(database, tenant.id)) == [
        "purchase.recorded",
        "return.recorded",
    ]


def test_resource_keys_are_made_of_server_ids_never_of_personal_data() -> None:
    """A message's resource key (kept with the message and its deliveries, and not scrubbed
    by an erasure) orders the messages of one resource. A customer's messages are keyed by
    the profile's server id; a profile without one gets no key (its messages are ordered
    each on its own) rather than a hash of the customer's email or id, which would outlive
    the person's erasure."""
    profile = {"id": "cus_01ABC", "customer": {"id": "c-42", "email": "ann@example.com"}}
    flagged = resource_key("customer.flagged", profile)
    assert flagged is not None
    assert resource_key("customer.unflagged", profile) == flagged
    assert resource_key("customer.erased", {"id": "cus_01ABC"}) == flagged
    for personal in ("ann@example.com", "c-42"):
        for family in ("customer", "return", "purchase", "reported"):
            digest = hashlib.sha256(f"{family}:{personal}".encode()).hexdigest()
            assert digest[:40] != flagged

    guest = {"id": None, "customer": {"id": None, "email": "ann@example.com"}}
    assert resource_key("customer.flagged", guest) is None
    unsaved = {"id": None, "customer": {"id": "c-42", "email": None}}
    assert resource_key("customer.flagged", unsaved) is None
    assert resource_key("customer.flagged", {"customer_id": "c-42"}) is None
    # Returns and orders are keyed by their own ids, which erasure keeps.
    assert resource_key("return.approved", {"id": "ret_1"}) == resource_key(
        "return.closed", {"id": "ret_1"}
    )
    assert resource_key("purchase.recorded", {"order_id": "o-1", "customer": guest}) is not None
