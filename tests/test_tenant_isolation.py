"""No request ever sees or changes another tenant's data (API.md 2)."""

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from returnstack.models import Event, OutboxEvent, ReportedEvent, Return
from tests.conftest import DatabaseFixture, TenantFixture
from tests.factories import batch, item, purchase, return_event, unique


def send(client: TestClient, tenant: TenantFixture, *events: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/v1/events", json=batch(*events), headers=tenant.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def order(client: TestClient, tenant: TenantFixture, order_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/orders/{order_id}", headers=tenant.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_a_tenant_never_reads_another_tenants_order(
    client: TestClient, tenant: TenantFixture, other_tenant: TenantFixture
) -> None:
    theirs = purchase()
    send(client, other_tenant, theirs)
    response = client.get(f"/v1/orders/{theirs['order_id']}", headers=tenant.headers)
    # 404, not 403: the order's existence is not revealed.
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found"
    assert order(client, other_tenant, theirs["order_id"])["order_id"] == theirs["order_id"]


def test_same_event_and_order_ids_in_two_tenants_are_independent(
    client: TestClient,
    tenant: TenantFixture,
    other_tenant: TenantFixture,
    database: DatabaseFixture,
) -> None:
    event_id, order_id, store_id, customer_id = (unique(p) for p in ("e", "o", "s", "c"))
    ours = purchase(
        id=event_id,
        order_id=order_id,
        channel="offline",
        store={"id": store_id, "name": "Ours", "city": "Berlin", "country": "DE"},
        customer={"id": customer_id, "email": "ours@example.com"},
        currency="EUR",
        items=[item(line_id="1", product_id="A", quantity=1, unit_price=100)],
    )
    theirs = purchase(
        id=event_id,
        order_id=order_id,
        channel="offline",
        store={"id": store_id, "name": "Theirs", "city": "Paris", "country": "FR"},
        customer={"id": customer_id, "email": "theirs@example.com"},
        currency="USD",
        items=[item(line_id="1", product_id="B", quantity=3, unit_price=300)],
    )
    first = send(client, tenant, ours)
    second = send(client, other_tenant, theirs)
    assert (first["accepted"], first["duplicates"]) == (1, 0)
    assert (second["accepted"], second["duplicates"]) == (1, 0)
    assert first["ids"] != second["ids"]

    mine = order(client, tenant, order_id)
    other = order(client, other_tenant, order_id)
    assert (mine["store"]["name"], mine["customer"]["email"], mine["currency"]) == (
        "Ours",
        "ours@example.com",
        "EUR",
    )
    assert (other["store"]["name"], other["customer"]["email"], other["currency"]) == (
        "Theirs",
        "theirs@example.com",
        "USD",
    )
    assert [(li["product_id"], li["quantity"]) for li in mine["lines"]] == [("A", 1)]
    assert [(li["product_id"], li["quantity"]) for li in other["lines"]] == [("B", 3)]

    with database.db.transaction(write=False) as session:
        owners = session.execute(
            select(Event.tenant_id, Event.id).where(Event.client_id == event_id)
        ).all()
    assert sorted(owners) == sorted(
        [(tenant.id, first["ids"][0]), (other_tenant.id, second["ids"][0])]
    )


def test_a_return_in_one_tenant_does_not_touch_the_same_order_id_in_another(
    client: TestClient, tenant: TenantFixture, other_tenant: TenantFixture
) -> None:
    order_id = unique("o")
    for who in (tenant, other_tenant):
        send(
            client,
            who,
            purchase(order_id=order_id, items=[item(line_id="1", product_id="A", quantity=2)]),
        )
    send(
        client,
        tenant,
        return_event(order_id=order_id, items=[{"line_id": "1", "product_id": "A", "quantity": 2}]),
    )
    assert order(client, tenant, order_id)["lines"][0]["returnable_quantity"] == 0
    untouched = order(client, other_tenant, order_id)["lines"][0]
    assert (untouched["claimed_quantity"], untouched["returned_quantity"]) == (0, 0)
    assert untouched["returnable_quantity"] == 2


def test_a_duplicate_is_judged_per_tenant(
    client: TestClient, tenant: TenantFixture, other_tenant: TenantFixture
) -> None:
    event = purchase()
    send(client, tenant, event)
    assert send(client, tenant, event)["duplicates"] == 1
    assert send(client, other_tenant, event)["accepted"] == 1


def test_publishable_key_writes_into_its_own_tenant_only(
    client: TestClient,
    tenant: TenantFixture,
    other_tenant: TenantFixture,
    database: DatabaseFixture,
) -> None:
    event = purchase()
    response = client.post("/v1/events", json=batch(event), headers=tenant.publishable_headers)
    assert response.status_code == 200, response.text
    with database.db.transaction(write=False) as session:
        kept = session.scalars(
            select(ReportedEvent.tenant_id).where(ReportedEvent.client_id == event["id"])
        ).all()
    assert kept == [tenant.id]  # a reported event (API.md 2), kept for its own tenant only
    # The same id from the other tenant's publishable key is new there.
    other = client.post("/v1/events", json=batch(event), headers=other_tenant.publishable_headers)
    assert other.json()["accepted"] == 1, other.text


def test_returns_and_outbox_rows_belong_to_the_tenant_that_sent_them(
    client: TestClient,
    tenant: TenantFixture,
    other_tenant: TenantFixture,
    database: DatabaseFixture,
) -> None:
    sale = purchase()
    send(client, tenant, sale, return_event(order_id=sale["order_id"]))
    with database.db.transaction(write=False) as session:
        outbox = session.scalars(
            select(OutboxEvent.type).where(OutboxEvent.tenant_id == other_tenant.id)
        ).all()
        returns = session.scalars(
            select(Return.id).where(Return.tenant_id == other_tenant.id)
        ).all()
        mine = session.scalars(
            select(OutboxEvent.type).where(OutboxEvent.tenant_id == tenant.id)
        ).all()
    assert outbox == []
    assert returns == []
    assert sorted(mine) == ["purchase.recorded", "return.recorded"]


def test_return_numbers_are_counted_per_tenant(
    client: TestClient,
    tenant: TenantFixture,
    other_tenant: TenantFixture,
    database: DatabaseFixture,
) -> None:
    send(client, tenant, return_event(), return_event())
    send(client, other_tenant, return_event())
    with database.db.transaction(write=False) as session:
        ours = session.scalars(
            select(Return.number).where(Return.tenant_id == tenant.id).order_by(Return.number)
        ).all()
        theirs = session.scalars(
            select(Return.number).where(Return.tenant_id == other_tenant.id)
        ).all()
    assert list(ours) == [1, 2]
    assert list(theirs) == [1]
