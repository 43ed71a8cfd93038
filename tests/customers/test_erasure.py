"""Erasure (API.md 5): after `DELETE /v1/customers/{id}` or `DELETE /v1/customers/lookup?email=`
nothing the service stores names the person, and nothing it logged did either.

Each test seeds every place personal data can sit through the API (facts, notes, metadata,
history and its actors, outbox data and changes, idempotency replays of every scope, saved
segments, attachments, storefront sessions), erases, then reads every column of every table
(from Base.metadata) and looks for the id and the emails (emails case-insensitively).
"""

import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import inspect, select
from sqlalchemy.sql import sqltypes

from returnstack.app import create_app
from returnstack.customers import personal_data
from returnstack.kit.logs import JsonFormatter
from returnstack.models import Base, OutboxEvent, Segment
from tests.conftest import DatabaseFixture, TenantFixture
from tests.factories import ts, unique
from tests.returns.helpers import Api, line, wanted

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + b"png-body" * 10
SESSION = "X-Storefront-Session"


# --- fixtures ------------------------------------------------------------------------------


class LogCapture(logging.Handler):
    """Every record the server side writes, formatted as the server's JSON log lines (extra
    fields included), SQL statements too (sqlalchemy.engine at INFO)."""

    # The test's own HTTP client logs the URLs it calls; that is not the server's log.
    CLIENT_SIDE = ("httpx", "httpcore")

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not record.name.startswith(self.CLIENT_SIDE):
            self.lines.append(self.format(record))

    def mentions(self, needles: list[str]) -> list[str]:
        return [line for line in self.lines if any(n.lower() in line.lower() for n in needles)]


@pytest.fixture
def logs() -> Iterator[LogCapture]:
    capture = LogCapture()
    root = logging.getLogger()
    engine_logger = logging.getLogger("sqlalchemy.engine")
    levels = (root.level, engine_logger.level)
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    engine_logger.setLevel(logging.INFO)
    try:
        yield capture
    finally:
        root.removeHandler(capture)
        root.setLevel(levels[0])
        engine_logger.setLevel(levels[1])


@pytest.fixture
def logged_client(database: DatabaseFixture) -> Iterator[TestClient]:
    """The app as served: one access-log line per request."""
    settings = database.settings.model_copy(update={"log_requests": True})
    app = create_app(settings, database=database.db)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def api(logged_client: TestClient, tenant: TenantFixture) -> Api:
    return Api(logged_client, tenant)


# --- seeding -------------------------------------------------------------------------------


def customer_token(tenant: TenantFixture, customer_id: str) -> str:
    now = int(time.time())
    claims = {"sub": customer_id, "iat": now, "exp": now + 600}
    return jwt.encode(claims, tenant.signing_secret, algorithm="HS256")


def open_session(api: Api, body: dict[str, Any]) -> dict[str, str]:
    response = api.http.post(
        "/v1/storefront/sessions", json=body, headers=api.tenant.publishable_headers
    )
    assert response.status_code == 201, response.text
    return {SESSION: response.json()["session"]}


def upload(api: Api, path: str, headers: dict[str, str], filename: str) -> None:
    response = api.http.post(path, files={"file": (filename, PNG, "image/png")}, headers=headers)
    assert response.status_code == 201, response.text


def seed_staff_return(api: Api, order: dict[str, Any], who: dict[str, Any], says: str) -> str:
    """A staff return naming the person everywhere it can: note, item note, metadata,
    external id, history notes, a PATCH (outbox `changes` with old and new notes and
    metadata), an attachment named after them, and a replayed Idempotency-Key."""
    body = {
        "items": [wanted(order, reason="other", note=f"item: {says}")],
        "note": f"first note: {says}",
        "metadata": {"contact": says, "ref": "A-1"},
        "customer": who,
    }
    key = {"Idempotency-Key": unique("idem")}
    created = api.post("/v1/returns", body, key)
    assert created.status_code == 201, created.text
    replay = api.post("/v1/returns", body, key)
    assert replay.headers.get("Idempotent-Replayed") == "true"
    ret: dict[str, Any] = created.json()
    patched = api.patch(
        f"/v1/returns/{ret['id']}",
        {"note": f"second note: {says}", "metadata": {"contact": f"again {says}"}},
    )
    assert patched.status_code == 200, patched.text
    api.act(
        ret,
        "approve",
        {"note": f"approved for {says}"},
        headers=key | {"Idempotency-Key": unique("k")},
    )
    upload(api, f"/v1/returns/{ret['id']}/attachments", api.tenant.headers, f"{says}.png")
    return str(ret["id"])


def seed_storefront_return(
    api: Api, session: dict[str, str], order: dict[str, Any], says: str
) -> str:
    """Opened and cancelled by the person on the storefront (history actor, storefront
    idempotency replay), with evidence uploaded."""
    key = {"Idempotency-Key": unique("sf")}
    body = {"items": [wanted(order, reason="other", note=f"sf item: {says}")]}
    opened = api.http.post("/v1/storefront/returns", json=body, headers=session | key)
    assert opened.status_code == 201, opened.text
    again = api.http.post("/v1/storefront/returns", json=body, headers=session | key)
    assert again.status_code == 201, again.text
    return_id = str(opened.json()["id"])
    upload(api, f"/v1/storefront/returns/{return_id}/attachments", session, f"{says}.png")
    cancelled = api.http.post(
        f"/v1/storefront/returns/{return_id}/cancel", json={"note": says}, headers=session
    )
    assert cancelled.status_code == 200, cancelled.text
    return return_id


def seed_cart(api: Api, email: str, says: str) -> None:
    item = {"qty": 1, "title": f"gift: {says}", "price": 100, "id": "A1", "url": "https://e.x/a"}
    response = api.http.post(
        "/purchase",
        json={"email": email, "incomplete": 1, "items": [item]},
        headers=api.tenant.headers,
    )
    assert response.status_code == 200, response.text
    assert response.json()["purchase"]["stored"] is True


def seed_segment(api: Api, where: str, name: str) -> str:
    response = api.post("/v1/segments", {"name": name, "where": where})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


# --- checks --------------------------------------------------------------------------------


def _text(value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return str(value)


def scan_database(database: DatabaseFixture, needles: list[str]) -> list[str]:
    """`table.column` of every stored value that contains a needle (case-insensitively),
    in every table of the schema, whatever the tenant."""
    wanted_needles = [needle.lower() for needle in needles]
    found = []
    with database.db.engine.connect() as connection:
        stored = set(inspect(connection).get_table_names()) - {"alembic_version"}
        assert stored == set(Base.metadata.tables), "every table is scanned"
        for table in Base.metadata.sorted_tables:
            for row in connection.execute(select(table)):
                for column, value in row._mapping.items():
                    if value is None:
                        continue
                    text = _text(value).lower()
                    if any(needle in text for needle in wanted_needles):
                        found.append(f"{table.name}.{column}: {_text(value)[:200]}")
    return found


def attachment_files(database: DatabaseFixture, tenant: TenantFixture) -> list[Path]:
    root = database.settings.data_dir / "attachments" / tenant.id
    return [path for path in root.rglob("*") if path.is_file()] if root.exists() else []


def outbox(database: DatabaseFixture, tenant_id: str) -> list[OutboxEvent]:
    with database.db.transaction(write=False) as session:
        return list(
            session.scalars(
                select(OutboxEvent)
                .where(OutboxEvent.tenant_id == tenant_id)
                .order_by(OutboxEvent.created_at, OutboxEvent.id)
            )
        )


def profile(api: Api, customer_id: str) -> dict[str, Any]:
    response = api.get(f"/v1/customers/{customer_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


# --- the tests -----------------------------------------------------------------------------


def test_erasing_a_customer_leaves_nothing_that_names_them(
    api: Api, database: DatabaseFixture, tenant: TenantFixture, logs: LogCapture
) -> None:
    customer_id = unique("cust")
    first_email = f"{unique('Ann')}@Example.com"  # sent in mixed case, stored normalised
    guest_email = f"{unique('ann-old')}@example.com"
    who = {"id": customer_id, "email": first_email}
    says = f"{first_email} / {customer_id}"
    api.set_policy(serial_returner={"min_orders": 1, "return_rate_value": 0.1})

    # Bought as a guest first, then with the customer id (the link merges the guest's facts).
    guest_order = api.buy(line("1", unit_price=1000), customer={"email": guest_email})
    guest_id = api.get("/v1/customers/lookup", params={"email": guest_email}).json()["id"]
    api.send(
        {
            "type": "purchase",
            "id": unique("p"),
            "timestamp": ts(0.9),
            "order_id": unique("o"),
            "currency": "EUR",
            "customer": {"id": customer_id, "email": guest_email, "name": "Ann Example"},
            "items": [line("1", unit_price=500)],
        }
    )
    # A product named after them (an engraving), in any case: free text of an order line.
    engraved = line("2", unit_price=100, name=f"Mug for {first_email.upper()}")
    engraved["url"] = f"https://shop.example/mug?for={first_email}"
    order = api.buy(
        line("1", quantity=3, unit_price=1000), engraved, customer=who | {"name": "Ann Example"}
    )
    # A recorded return with a free-text reason (kept as the item's note) and a refund that
    # makes them a serial returner (customer.flagged carries the whole profile).
    api.record_return(
        guest_order,
        {
            "line_id": "1",
            "product_id": guest_order["items"][0]["product_id"],
            "quantity": 1,
            "reason": f"told us {says}",
        },
        refund={"amount": 1000},
    )
    staff_return = seed_staff_return(api, order, {"id": customer_id}, says)
    session = open_session(api, {"customer_token": customer_token(tenant, customer_id)})
    storefront_return = seed_storefront_return(api, session, order, says)
    # A publishable key's replay (its own idempotency scope) of an event naming them.
    reported = api.http.post(
        "/v1/events",
        json={
            "events": [
                {
                    "type": "purchase",
                    "id": unique("p"),
                    "timestamp": ts(0.5),
                    "order_id": unique("o"),
                    "customer": {"id": customer_id, "email": first_email},
                    "items": [line("1")],
                }
            ]
        },
        headers=tenant.publishable_headers | {"Idempotency-Key": unique("pk")},
    )
    assert reported.status_code == 200, reported.text
    # An open Sailthru cart (COMPAT.md: stored, never revenue), by email only.
    seed_cart(api, first_email, says)
    segment = seed_segment(
        api,
        f'email = "{first_email.upper()}" or customer_id in ["{customer_id}", "someone-else"]'
        " or orders > 100",
        f"watch {first_email}",
    )
    # Someone else's data, which must survive untouched.
    other = {"id": unique("cust"), "email": f"{unique('bob')}@example.com"}
    # Their email in a line of someone else's order ("anywhere", API.md section 5).
    gift = line("2", unit_price=100, name=f"Gift card for {guest_email} from bob")
    other_order = api.buy(line("1", unit_price=700), gift, customer=other)
    other_return = api.open(wanted(other_order, reason="other", note="bob keeps this"))

    server_id = profile(api, customer_id)["id"]
    assert server_id.startswith("cus_")
    assert "serial_returner" in profile(api, customer_id)["flags"]
    needles = [customer_id, first_email, guest_email]
    assert scan_database(database, needles), "the seeding reached the database"
    assert attachment_files(database, tenant)
    events_before = len(outbox(database, tenant.id))

    erased = api.delete(f"/v1/customers/{customer_id}")
    assert erased.status_code == 204, erased.text
    assert erased.content == b""

    assert scan_database(database, needles) == []
    assert logs.mentions(needles) == []
    assert attachment_files(database, tenant) == []
    # Their session is gone; the storefront treats it as unknown.
    assert api.http.get("/v1/storefront/orders", headers=session).status_code == 401
    assert api.get(f"/v1/customers/{customer_id}").status_code == 404
    assert api.get("/v1/customers/lookup", params={"email": guest_email}).status_code == 404
    assert api.delete(f"/v1/customers/{customer_id}").status_code == 404

    # News of it: customer.erased naming a server id only, for the customer and for the
    # guest they were before (receivers may know either); nothing else was added.
    events = outbox(database, tenant.id)
    news = [row for row in events if row.type == "customer.erased"]
    assert sorted(orjson.dumps(row.data) for row in news) == sorted(
        orjson.dumps({"id": known}) for known in (server_id, guest_id)
    )
    assert all(row.changes is None for row in news)
    assert len(events) == events_before + 2

    # The anonymous facts still count: units stay claimed and returned.
    kept = api.order(order["order_id"])
    assert kept["customer"] is None
    assert kept["lines"][0]["claimed_quantity"] == 1  # the staff return (storefront one cancelled)
    assert api.order(guest_order["order_id"])["lines"][0]["returned_quantity"] == 1
    for return_id in (staff_return, storefront_return):
        anonymous = api.read(return_id)
        assert anonymous["customer"] is None
        assert anonymous["note"] is None
        assert anonymous["metadata"] == {}
        assert anonymous["attachments"] == []
        assert all(entry["note"] is None for entry in anonymous["history"])
    actors = {entry["actor"] for entry in api.read(storefront_return)["history"]}
    assert "storefront:customer" in actors

    # The saved segment still works, and still means what it meant for everyone left.
    saved = api.get(f"/v1/segments/{segment}").json()
    assert saved["where"] == 'email = "" or customer_id in ["", "someone-else"] or orders > 100'
    assert api.get(f"/v1/segments/{segment}/customers").status_code == 200

    # What was sold stays, with [erased] for the email; the rest of the text is kept.
    names = {line["line_id"]: line["name"] for line in api.order(order["order_id"])["lines"]}
    assert names["2"] == "Mug for [erased]"
    names = {line["line_id"]: line["name"] for line in api.order(other_order["order_id"])["lines"]}
    assert names["2"] == "Gift card for [erased] from bob"

    # Someone else's return and profile are untouched.
    assert api.read(other_return)["items"][0]["note"] == "bob keeps this"
    assert profile(api, other["id"])["customer"]["email"] == other["email"]


def test_erasing_a_guest_by_email_leaves_nothing_that_names_them(
    api: Api, database: DatabaseFixture, tenant: TenantFixture, logs: LogCapture
) -> None:
    guest = f"{unique('gus')}@example.com"
    says = f"write to {guest}"
    order = api.buy(line("1", quantity=2, unit_price=1500), customer={"email": guest})
    staff_return = seed_staff_return(api, order, {"email": guest}, says)
    session = open_session(api, {"order_id": order["order_id"], "email": guest})
    storefront_return = seed_storefront_return(api, session, order, says)
    segment = seed_segment(api, f'email in ["{guest}"]', "one guest")
    seed_cart(api, guest, says)
    someone = api.buy(line("1"), customer={"email": f"{unique('kim')}@example.com"})

    looked_up = api.get("/v1/customers/lookup", params={"email": guest})
    assert looked_up.status_code == 200, looked_up.text
    server_id = looked_up.json()["id"]
    assert server_id.startswith("cus_")
    assert looked_up.json()["customer"]["id"] is None
    assert scan_database(database, [guest])

    erased = api.delete("/v1/customers/lookup", params={"email": f"  {guest.upper()} "})
    assert erased.status_code == 204, erased.text

    assert scan_database(database, [guest]) == []
    assert logs.mentions([guest]) == []
    assert attachment_files(database, tenant) == []
    assert api.http.get("/v1/storefront/orders", headers=session).status_code == 401
    assert api.get("/v1/customers/lookup", params={"email": guest}).status_code == 404
    assert api.delete("/v1/customers/lookup", params={"email": guest}).status_code == 404
    news = [row.data for row in outbox(database, tenant.id) if row.type == "customer.erased"]
    assert news == [{"id": server_id}]
    for return_id in (staff_return, storefront_return):
        anonymous = api.read(return_id)
        assert anonymous["customer"] is None
        assert anonymous["note"] is None
    assert api.order(order["order_id"])["lines"][0]["claimed_quantity"] == 1
    assert api.get(f"/v1/segments/{segment}").json()["where"] == 'email in [""]'
    assert api.order(someone["order_id"])["customer"] is not None


def test_a_person_known_only_by_an_open_cart_can_be_erased(
    api: Api, database: DatabaseFixture
) -> None:
    shopper = f"{unique('Cat')}@Example.com"
    seed_cart(api, shopper, "just looking")
    assert scan_database(database, [shopper.lower()])

    erased = api.delete("/v1/customers/lookup", params={"email": shopper})
    assert erased.status_code == 204, erased.text
    assert scan_database(database, [shopper.lower()]) == []


def test_erasing_by_an_email_of_a_customer_erases_that_customer(
    api: Api, database: DatabaseFixture, tenant: TenantFixture
) -> None:
    """`lookup?email=` names the profile GET answers: for a linked email, the customer's."""
    who = {"id": unique("cust"), "email": f"{unique('lin')}@example.com"}
    order = api.buy(line("1"), customer=who)
    server_id = profile(api, who["id"])["id"]

    assert api.delete("/v1/customers/lookup", params={"email": who["email"]}).status_code == 204

    assert api.get(f"/v1/customers/{who['id']}").status_code == 404
    assert api.order(order["order_id"])["customer"] is None
    assert scan_database(database, [who["id"], who["email"]]) == []
    news = [row.data for row in outbox(database, tenant.id) if row.type == "customer.erased"]
    assert news == [{"id": server_id}]


def test_a_customer_once_a_guest_is_erased_under_both_server_ids(
    api: Api, database: DatabaseFixture, tenant: TenantFixture
) -> None:
    """Receivers may have seen the guest's id before the link: both are announced."""
    guest = f"{unique('was')}@example.com"
    api.buy(line("1"), customer={"email": guest})
    guest_id = api.get("/v1/customers/lookup", params={"email": guest}).json()["id"]
    customer_id = unique("cust")
    api.buy(line("1"), customer={"id": customer_id, "email": guest})
    server_id = profile(api, customer_id)["id"]
    assert server_id != guest_id
    assert api.get("/v1/customers/lookup", params={"email": guest}).json()["id"] == server_id

    assert api.delete(f"/v1/customers/{customer_id}").status_code == 204

    news = [row.data for row in outbox(database, tenant.id) if row.type == "customer.erased"]
    assert sorted(item["id"] for item in news) == sorted([server_id, guest_id])


def test_the_server_id_is_stable_and_opaque(api: Api) -> None:
    who = {"id": unique("cust"), "email": f"{unique('st')}@example.com"}
    api.buy(line("1"), customer=who)
    first = profile(api, who["id"])["id"]
    api.buy(line("1"), customer=who)
    assert profile(api, who["id"])["id"] == first
    assert api.get("/v1/customers/lookup", params={"email": who["email"]}).json()["id"] == first
    assert who["id"] not in first
    assert who["email"] not in first


def test_erasure_by_email_answers_like_the_rest_of_the_api(
    api: Api, client: TestClient, tenant: TenantFixture, other_tenant: TenantFixture
) -> None:
    guest = f"{unique('ask')}@example.com"
    api.buy(line("1"), customer={"email": guest})
    path = "/v1/customers/lookup"

    unknown = api.delete(path, params={"email": f"{unique('nobody')}@example.com"})
    assert unknown.status_code == 404
    assert unknown.json()["error"]["type"] == "not_found"
    missing = api.delete(path)
    assert missing.status_code == 400
    assert missing.json()["error"]["details"][0]["path"] == "email"
    invalid = api.delete(path, params={"email": "not an email"})
    assert invalid.status_code == 400
    assert invalid.json()["error"]["details"][0]["path"] == "email"
    assert client.delete(path, params={"email": guest}).status_code == 401
    public = client.delete(path, params={"email": guest}, headers=tenant.publishable_headers)
    assert public.status_code == 403
    stranger = client.delete(path, params={"email": guest}, headers=other_tenant.headers)
    assert stranger.status_code == 404
    # None of these erased anything.
    assert api.get(path, params={"email": guest}).status_code == 200


def test_a_rolled_back_erasure_keeps_everything(
    api: Api, database: DatabaseFixture, tenant: TenantFixture
) -> None:
    """Attachment files go only with the commit."""
    who = {"id": unique("cust"), "email": f"{unique('rb')}@example.com"}
    order = api.buy(line("1"), customer=who)
    seed_staff_return(api, order, {"id": who["id"]}, "keep")
    from returnstack.customers.erasure import erase_customer
    from returnstack.returns.attachments import storage_from_settings

    storage = storage_from_settings(database.settings)
    session = database.db.session(write=True)
    try:
        erase_customer(session, tenant_id=tenant.id, customer_id=who["id"], storage=storage)
        session.flush()
    finally:
        session.rollback()
        session.close()
    assert attachment_files(database, tenant)
    assert profile(api, who["id"])["customer"]["id"] == who["id"]


def test_every_stored_text_has_a_known_place_in_the_personal_data_map() -> None:
    """DESIGN.md: personal data has a known set of homes. A new column that can hold text
    must be listed as a home (and erased) or as holding none, with its reason."""
    textual = (sqltypes.String, sqltypes.JSON, sqltypes.LargeBinary)
    columns = {
        f"{table.name}.{column.name}"
        for table in Base.metadata.sorted_tables
        for column in table.columns
        if isinstance(column.type, textual)
    }
    listed = set(personal_data.HOMES) | set(personal_data.NOT_PERSONAL)
    assert columns - listed == set(), "classify these columns in customers/personal_data.py"
    assert listed - columns == set(), "these columns no longer exist"
    assert not set(personal_data.HOMES) & set(personal_data.NOT_PERSONAL)


def test_the_erasure_scan_would_see_a_leak(
    api: Api, database: DatabaseFixture, tenant: TenantFixture
) -> None:
    """The scanner itself: a value written around the API is found, in any table."""
    marker = f"{unique('Leak')}@Example.com"
    with database.db.transaction() as session:
        session.add(
            Segment(
                tenant_id=tenant.id,
                id=unique("seg"),
                name="x",
                expression=f'email = "{marker}"',
                created_at=datetime.now(UTC),
                updated_at=datetime.now(UTC),
            )
        )
    assert scan_database(database, [marker.lower()]) != []


def test_a_short_customer_id_leaves_everyone_else_alone(
    api: Api, database: DatabaseFixture, tenant: TenantFixture
) -> None:
    """Customer "7" is erased; line "7", product "7" and a key "7" of others stay."""
    api.buy(line("7", product_id="7", unit_price=700), customer={"id": "7"})
    other = {"id": unique("cust"), "email": f"{unique('oth')}@example.com"}
    order = api.buy(line("7", product_id="7", unit_price=700), customer=other)
    body = {"items": [wanted(order, line_id="7", reason="other", note="7")], "metadata": {"7": "7"}}
    key = {"Idempotency-Key": "7"}
    assert api.post("/v1/returns", body, key).status_code == 201
    theirs_before = [
        row.data
        for row in outbox(database, tenant.id)
        if row.data.get("customer") != {"id": "7", "email": None}
    ]

    assert api.delete("/v1/customers/7").status_code == 204

    theirs_after = [
        row.data for row in outbox(database, tenant.id) if row.type != "customer.erased"
    ]
    assert [data for data in theirs_after if data in theirs_before] == theirs_before
    replay = api.post("/v1/returns", body, key)
    assert replay.headers.get("Idempotent-Replayed") == "true"
    assert api.get(f"/v1/customers/{other['id']}").status_code == 200


def test_a_person_with_hundreds_of_returns_can_be_erased(
    api: Api, database: DatabaseFixture, tenant: TenantFixture
) -> None:
    """Erasure looks for the person's returns in the outbox; with hundreds of them the
    search must still be one SQLite can run (its expressions stop at 1,000 levels)."""
    person = {"id": unique("cust"), "email": f"{unique('many')}@example.com"}
    order = api.buy(line(quantity=600), customer=person)
    events = [
        {
            "type": "return",
            "id": unique("r"),
            "timestamp": ts(0.5),
            "channel": "online",
            "customer": person,
            "order_id": order["order_id"],
            "currency": order["currency"],
            "items": [{"product_id": order["items"][0]["product_id"], "quantity": 1}],
        }
        for _ in range(550)
    ]
    assert api.post("/v1/events", {"events": events}).status_code == 200

    erased = api.delete(f"/v1/customers/{person['id']}")

    assert erased.status_code == 204, erased.text
    with database.db.transaction(write=False) as session:
        payloads = session.scalars(
            select(OutboxEvent.data).where(OutboxEvent.tenant_id == tenant.id)
        ).all()
    assert person["email"] not in str(payloads).lower()
