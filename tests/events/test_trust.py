"""Trust (API.md 2): a publishable key is public, so what it sends is *reported*: kept apart
(reported_events, reported_items) for product signals, never an order, a return, a refund, a
customer, an identity link, a profile or a storefront session. Each attack below worked on
the code before the reported path existed; each test first failed there."""

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from returnstack.models import (
    Customer,
    CustomerEmail,
    Event,
    IdempotencyKey,
    Order,
    ReportedEvent,
    ReportedItem,
    Return,
    Store,
)
from tests.conftest import DatabaseFixture, TenantFixture
from tests.factories import batch, item, purchase, return_event, ts, unique
from tests.returns.helpers import Api, all_outbox, line, person, wanted

HEADER = "X-Storefront-Session"


@pytest.fixture
def api(client: TestClient, tenant: TenantFixture) -> Api:
    return Api(client, tenant)


def report(api: Api, *events: dict[str, Any], **params: Any) -> dict[str, Any]:
    """POST /v1/events with the publishable key (anyone may hold it); must answer 200."""
    response = api.http.post(
        "/v1/events", json=batch(*events), headers=api.tenant.publishable_headers, params=params
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def victim(api: Api) -> tuple[dict[str, str], dict[str, Any]]:
    """A guest (email only) with a real order of two units and a return opened for one."""
    who = {"email": f"{unique('victim')}@example.com"}
    order = api.buy(line("1", quantity=2, unit_price=5000), customer=who)
    api.open(wanted(order, note="my private note"), customer=who)
    return who, order


def profile_of(api: Api, email: str) -> dict[str, Any]:
    response = api.get("/v1/customers/lookup", params={"email": email})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def guest_session(api: Api, order_id: str, email: str) -> Any:
    return api.http.post(
        "/v1/storefront/sessions",
        json={"order_id": order_id, "email": email},
        headers=api.tenant.publishable_headers,
    )


# --- (a) a reported purchase never opens a storefront session -------------------------------


def test_a_reported_purchase_with_a_victims_email_grants_no_storefront_session(
    api: Api,
) -> None:
    who, order = victim(api)
    made_up = purchase(customer={"email": who["email"]}, order_id=unique("made-up"))
    assert report(api, made_up)["accepted"] == 1

    session = guest_session(api, made_up["order_id"], who["email"])
    assert session.status_code == 401, session.text
    assert session.json()["error"]["type"] == "authentication_failed"
    # Nothing of the victim's became readable: no order was made, and the victim's own
    # order and return are as they were.
    assert api.get(f"/v1/orders/{made_up['order_id']}").status_code == 404
    assert api.lines(order)["1"] == (2, 1, 0, 1)
    (ret,) = api.list()
    assert ret["status"] == "requested"  # nobody could cancel it
    assert api.read(ret)["items"][0]["note"] == "my private note"


# --- (b) a reported return changes no order, no return, no refund, no profile ---------------


def test_a_reported_return_against_a_real_order_changes_nothing_of_the_victims(
    api: Api,
) -> None:
    api.set_policy(serial_returner={"min_orders": 1, "return_rate_value": 0.01})
    who, order = victim(api)
    order_before = api.order(order["order_id"])
    profile_before = profile_of(api, who["email"])
    returns_before = api.list()

    attack = return_event(
        order_id=order["order_id"],
        customer=who,
        currency="EUR",
        items=[{"line_id": "1", "product_id": order["items"][0]["product_id"], "quantity": 2}],
        refund={"amount": 10**12, "method": "original_payment"},
    )
    assert report(api, attack)["accepted"] == 1

    assert api.order(order["order_id"]) == order_before
    assert api.returnable(order) == 1
    after = profile_of(api, who["email"])
    assert after == profile_before
    totals = after["totals"]["EUR"]
    assert (totals["returns"], totals["refunded"]) == (0, 0)
    assert after["flags"] == []
    assert api.list() == returns_before  # no return was recorded


# --- (c) a reported purchase adds no lines to an existing order -----------------------------


def test_a_reported_purchase_naming_an_existing_order_adds_no_lines(api: Api) -> None:
    order = api.buy(line("1", unit_price=1999), customer=person())
    before = api.order(order["order_id"])
    attack = purchase(
        order_id=order["order_id"],
        customer=order["customer"],
        items=[item(line_id="2", unit_price=10**9, quantity=50), item(line_id="1", quantity=9)],
    )
    assert report(api, attack)["accepted"] == 1
    assert api.order(order["order_id"]) == before
    profile = api.get(f"/v1/customers/{order['customer']['id']}").json()
    assert profile["totals"]["EUR"]["gross_revenue"] == 1999


# --- (d) a reported event links no identities -----------------------------------------------


def test_a_reported_event_naming_an_id_and_a_guest_email_links_nothing(api: Api) -> None:
    guest = {"email": f"{unique('guest')}@example.com"}
    order = api.buy(line("1"), customer=guest)
    attacker = unique("attacker")
    claims = [
        purchase(customer={"id": attacker, "email": guest["email"]}),
        return_event(
            customer={"id": attacker, "email": guest["email"]}, order_id=order["order_id"]
        ),
    ]
    assert report(api, *claims)["accepted"] == 2

    assert api.get(f"/v1/customers/{attacker}").status_code == 404
    still_guest = profile_of(api, guest["email"])
    assert still_guest["customer"]["id"] is None
    assert api.order(order["order_id"])["customer"] == {"id": None, "email": guest["email"]}
    # The attacker's customer id cannot open a return for the guest's order either.
    refused = api.post("/v1/returns", {"customer": {"id": attacker}, "items": [wanted(order)]})
    assert refused.status_code == 422, refused.text


# --- (e) ids are scoped by trust ------------------------------------------------------------


def test_a_reported_id_taken_first_does_not_make_the_verified_event_a_duplicate(
    api: Api, database: DatabaseFixture
) -> None:
    event_id = unique("shared")
    decoy = purchase(id=event_id, items=[item(quantity=1, unit_price=1)])
    reported = report(api, decoy)
    assert (reported["accepted"], reported["duplicates"]) == (1, 0)

    real = purchase(id=event_id, customer=person(), items=[line("1", quantity=3)])
    response = api.post("/v1/events", batch(real))
    assert response.status_code == 200, response.text
    verified = response.json()
    assert (verified["accepted"], verified["duplicates"]) == (1, 0)
    assert verified["ids"][0] != reported["ids"][0]
    assert api.lines(real)["1"] == (3, 0, 0, 3)
    with database.db.transaction(write=False) as session:
        ledger = session.scalars(
            select(Event.id).where(Event.tenant_id == api.tenant.id, Event.client_id == event_id)
        ).all()
        kept = session.scalars(
            select(ReportedEvent.id).where(
                ReportedEvent.tenant_id == api.tenant.id, ReportedEvent.client_id == event_id
            )
        ).all()
    assert ledger == verified["ids"]
    assert kept == reported["ids"]

    # Within each scope a repeated id is a duplicate with the first event's id.
    again = report(api, decoy)
    assert (again["accepted"], again["duplicates"], again["ids"]) == (0, 1, reported["ids"])
    repeat = api.post("/v1/events", batch(real)).json()
    assert (repeat["accepted"], repeat["duplicates"], repeat["ids"]) == (0, 1, verified["ids"])


def test_a_verified_id_taken_first_does_not_make_a_reported_event_a_duplicate(
    api: Api,
) -> None:
    real = api.buy(line("1"))
    reported = report(api, purchase(id=real["id"]))
    assert (reported["accepted"], reported["duplicates"]) == (1, 0)
    assert api.lines(real)["1"] == (1, 0, 0, 1)


# --- (f) Idempotency-Keys are scoped by trust -----------------------------------------------


def test_a_publishable_idempotency_key_never_blocks_or_replays_the_merchants_requests(
    api: Api, database: DatabaseFixture
) -> None:
    order = api.buy(line("1", quantity=2))
    key = {"Idempotency-Key": unique("key")}
    first = api.http.post(
        "/v1/events",
        json=batch(purchase()),
        headers=api.tenant.publishable_headers | key,
    )
    assert first.status_code == 200, first.text

    opened = api.post("/v1/returns", {"items": [wanted(order)]}, headers=key)
    assert opened.status_code == 201, opened.text  # not 409, not the events replay
    assert opened.json()["items"][0]["order_id"] == order["order_id"]

    other_key = {"Idempotency-Key": unique("key")}
    decoy = api.http.post(
        "/v1/events", json=batch(purchase()), headers=api.tenant.publishable_headers | other_key
    )
    assert decoy.status_code == 200, decoy.text
    real = purchase()
    sent = api.post("/v1/events", batch(real), headers=other_key)
    assert sent.status_code == 200, sent.text
    assert sent.json()["accepted"] == 1
    assert sent.json()["ids"] != decoy.json()["ids"]
    assert api.get(f"/v1/orders/{real['order_id']}").status_code == 200

    # Within its own scope the publishable key's Idempotency-Key still replays.
    replay = api.http.post(
        "/v1/events",
        json=batch(purchase(id=first.json()["ids"][0])),
        headers=api.tenant.publishable_headers | key,
    )
    assert replay.status_code == 409, replay.text  # same key, another body
    with database.db.transaction(write=False) as session:
        scopes = set(
            session.scalars(
                select(IdempotencyKey.scope).where(
                    IdempotencyKey.tenant_id == api.tenant.id,
                    IdempotencyKey.key == key["Idempotency-Key"],
                )
            )
        )
    assert scopes == {"publishable", "secret"}


# --- (g) reported events are kept, and raise only *.reported with no personal data ----------


def test_reported_events_are_kept_apart_and_raise_only_reported_messages(
    api: Api, database: DatabaseFixture
) -> None:
    shopper = {"id": unique("cust"), "email": f"{unique('u')}@example.com", "name": "Ann Person"}
    sale = purchase(
        customer=shopper,
        channel="offline",
        store={"id": unique("store"), "name": "Berlin Mitte", "city": "Berlin"},
        items=[
            item(
                line_id="1",
                product_id="SKU-R1",
                variant_id="SKU-R1-M",
                quantity=2,
                unit_price=1799,
                category="Apparel/Tops",
            ),
        ],
    )
    back = return_event(
        customer=shopper,
        order_id=sale["order_id"],
        items=[
            {
                "product_id": "SKU-R1",
                "variant_id": "SKU-R1-M",
                "quantity": 1,
                "reason": "size_too_small",
                "note": "call me at +49 30 1234",
            },
            {"product_id": "SKU-R1", "quantity": 1, "reason": "Ann hated it", "unit_price": 1799},
        ],
        refund={"amount": 1799, "method": "store_credit"},
    )
    body = report(api, sale, back)
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (2, 0, [])
    assert all(server_id.startswith("evt_") for server_id in body["ids"])

    with database.db.transaction(write=False) as session:
        mine = ReportedEvent.tenant_id == api.tenant.id
        events = {row.client_id: row for row in session.scalars(select(ReportedEvent).where(mine))}
        items = session.scalars(
            select(ReportedItem)
            .where(ReportedItem.tenant_id == api.tenant.id)
            .order_by(ReportedItem.event_client_id, ReportedItem.position)
        ).all()
        nothing_else = {
            model.__tablename__: session.scalars(
                select(model).where(model.tenant_id == api.tenant.id)
            ).all()
            for model in (Event, Order, Return, Customer, CustomerEmail, Store)
        }
    assert set(events) == {sale["id"], back["id"]}
    kept_sale, kept_back = events[sale["id"]], events[back["id"]]
    assert [kept_sale.id, kept_back.id] == body["ids"]
    assert (kept_sale.type, kept_sale.order_id, kept_sale.channel, kept_sale.store_id) == (
        "purchase",
        sale["order_id"],
        "offline",
        sale["store"]["id"],
    )
    assert (kept_back.type, kept_back.refund_amount, kept_back.currency) == ("return", 1799, "EUR")
    assert kept_sale.source == kept_back.source == "api"
    by_event = {(row.event_client_id, row.position): row for row in items}
    sold = by_event[(sale["id"], 1)]
    assert (sold.product_id, sold.variant_id, sold.category, sold.quantity, sold.unit_price) == (
        "SKU-R1",
        "SKU-R1-M",
        "Apparel/Tops",
        2,
        1799,
    )
    returned = [by_event[(back["id"], 1)], by_event[(back["id"], 2)]]
    assert [(r.product_id, r.quantity, r.reason, r.unit_price) for r in returned] == [
        ("SKU-R1", 1, "size_too_small", None),
        ("SKU-R1", 1, "other", 1799),  # free text is not kept: it may name a person
    ]
    assert nothing_else == {name: [] for name in nothing_else}

    messages = all_outbox(database, api.tenant.id)
    assert sorted(m.type for m in messages) == ["purchase.reported", "return.reported"]
    by_type = {m.type: m.data for m in messages}
    assert by_type["purchase.reported"] == {
        "id": body["ids"][0],
        "client_id": sale["id"],
        "type": "purchase",
        "trust": "reported",
        "order_id": sale["order_id"],
        "channel": "offline",
        "store_id": sale["store"]["id"],
        "currency": "EUR",
        "occurred_at": by_type["purchase.reported"]["occurred_at"],
        "items": [
            {
                "product_id": "SKU-R1",
                "variant_id": "SKU-R1-M",
                "category": "Apparel/Tops",
                "quantity": 2,
                "unit_price": 1799,
                "reason": None,
            },
        ],
        "refund_amount": None,
    }
    assert by_type["return.reported"]["items"][1]["reason"] == "other"
    assert by_type["return.reported"]["refund_amount"] == 1799
    for message in messages:
        text = str(message.data) + str(message.changes)
        for personal in (shopper["id"], shopper["email"], "Ann", "1234", "Berlin Mitte"):
            assert personal not in text, (personal, message.type, text)


# --- the rest of the contract ---------------------------------------------------------------


def test_reported_events_answer_the_same_shape_and_follow_partial(api: Api) -> None:
    good = purchase()
    bad = purchase(items=[item(quantity=0)])
    refused = api.http.post(
        "/v1/events", json=batch(good, bad), headers=api.tenant.publishable_headers
    )
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["details"][0]["path"].startswith("events[1].items[0]")
    assert report(api, good)["accepted"] == 1  # nothing of the refused request was kept

    twice = purchase()
    body = report(api, twice, twice, bad, partial="true")
    assert set(body) == {"accepted", "duplicates", "rejected", "ids"}
    assert (body["accepted"], body["duplicates"]) == (1, 1)
    assert [r["index"] for r in body["rejected"]] == [2]
    assert body["ids"][0] == body["ids"][1]


def test_a_reported_offline_event_leaves_the_stores_alone(
    api: Api, database: DatabaseFixture
) -> None:
    store = {"id": unique("store"), "name": "Berlin Mitte", "city": "Berlin", "country": "DE"}
    api.buy(line("1"), channel="offline", store=store)
    report(
        api,
        purchase(channel="offline", store=store | {"name": "Hacked", "city": "Nowhere"}),
        purchase(channel="offline", store={"id": unique("new-store"), "name": "Fake"}),
    )
    with database.db.transaction(write=False) as session:
        stores = session.scalars(select(Store).where(Store.tenant_id == api.tenant.id)).all()
    assert [(s.id, s.name, s.city) for s in stores] == [(store["id"], "Berlin Mitte", "Berlin")]


def test_another_tenant_sees_nothing_of_reported_events(
    api: Api, other_tenant: TenantFixture, database: DatabaseFixture
) -> None:
    event = purchase()
    report(api, event)
    other = Api(api.http, other_tenant)
    response = other.http.post(
        "/v1/events", json=batch(event), headers=other_tenant.publishable_headers
    )
    assert response.json()["accepted"] == 1  # ids are per tenant
    assert not [m for m in all_outbox(database, other_tenant.id) if m.type != "purchase.reported"]


def test_the_cli_import_records_verified_facts(
    api: Api, database: DatabaseFixture, tmp_path: Any
) -> None:
    import io

    import orjson

    from returnstack.events.importer import import_events

    event = purchase(timestamp=ts(2))
    stream = io.BytesIO(orjson.dumps(event) + b"\n")
    result = import_events(
        database.db, stream, tenant_id=api.tenant.id, default_currency="EUR", fmt="jsonl"
    )
    assert result.accepted == 1
    sold = event["items"][0]
    assert api.lines(event)[sold["line_id"]][0] == sold["quantity"]
    assert [m.type for m in all_outbox(database, api.tenant.id)] == ["purchase.recorded"]
