"""Bounded input (API.md 1, "Sizes are bounded"; docs/api.md "Conventions"): metadata,
notes, items a return, line values and every stored sum at most 2^53 - 1, valid Unicode
only, and CSV cells a spreadsheet would not run. Each limit is a 4xx naming the field, with
nothing written; never a 500."""

import asyncio
import csv
import io
import json
from collections.abc import Sequence
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from returnstack.customers.profiles import Delta, ProfileChanges
from returnstack.events.importer import CSV_COLUMNS, read_csv
from returnstack.events.validation import check_event
from returnstack.kit.errors import InvalidRequest, ValidationFailed
from returnstack.kit.http import if_match_version
from returnstack.models import CustomerProfile, Order, Return
from tests.conftest import DatabaseFixture, TenantFixture
from tests.factories import batch, item, purchase, return_event, unique
from tests.returns.helpers import Api, error_codes, line, person, wanted
from tests.storefront.test_storefront import HEADER, open_session, token

MAX_SAFE = 2**53 - 1  # the largest integer every JSON client reads exactly
# A line worth just under 2^53 within the per-field limits (price <= 10^12, quantity <= 10^5).
BIG_PRICE, BIG_QUANTITY = 10**12, 9007


@pytest.fixture
def api(client: TestClient, tenant: TenantFixture) -> Api:
    return Api(client, tenant)


def details(response: Any, status: int | tuple[int, ...]) -> list[dict[str, Any]]:
    statuses = status if isinstance(status, tuple) else (status,)
    assert response.status_code in statuses, response.text
    error = response.json()["error"]
    assert (
        error["type"]
        == {400: "invalid_request", 404: "not_found", 422: "validation_failed"}[
            response.status_code
        ]
    )
    assert isinstance(error["message"], str)
    assert error["message"]
    assert all(isinstance(d["path"], str) and d["message"] for d in error["details"])
    result: list[dict[str, Any]] = error["details"]
    return result


def paths(response: Any, status: int | tuple[int, ...] = 422) -> set[str]:
    return {detail["path"] for detail in details(response, status)}


def count(database: DatabaseFixture, model: Any, tenant_id: str) -> int:
    with database.db.transaction(write=False) as session:
        found = session.scalar(
            select(func.count()).select_from(model).where(model.tenant_id == tenant_id)
        )
        return found or 0


# --- metadata ------------------------------------------------------------------------------


METADATA_OK: list[dict[str, Any]] = [
    {f"k{i}": "v" for i in range(50)},
    {"k" * 40: "x" * 500},
    {"max": 2**53, "min": -(2**53), "zero": 0, "empty": ""},
]
METADATA_BAD: list[tuple[str, Any]] = [
    ("51_keys", {f"k{i}": "v" for i in range(51)}),
    ("key_41", {"k" * 41: "v"}),
    ("key_empty", {"": "v"}),
    ("value_501", {"k": "x" * 501}),
    ("int_above_2_53", {"k": 2**53 + 1}),
    ("int_below_minus_2_53", {"k": -(2**53) - 1}),
    ("int_above_2_64", {"k": 2**64 + 1}),  # once a 500: orjson cannot write it
    ("float", {"k": 1.5}),
    ("bool", {"k": True}),
    ("null", {"k": None}),
    ("object", {"k": {"nested": 1}}),
    ("list", {"k": [1]}),
    ("not_an_object", ["k"]),
]


@pytest.mark.parametrize("metadata", METADATA_OK)
def test_metadata_at_the_limits_is_kept(api: Api, metadata: dict[str, Any]) -> None:
    order = api.buy()
    ret = api.open(wanted(order), metadata=metadata)
    assert api.read(ret)["metadata"] == metadata


@pytest.mark.parametrize(("case", "metadata"), METADATA_BAD, ids=[c for c, _ in METADATA_BAD])
def test_metadata_beyond_the_limits_is_422_on_create_and_patch(
    api: Api, database: DatabaseFixture, case: str, metadata: Any
) -> None:
    order = api.buy()
    created = api.post("/v1/returns", {"items": [wanted(order)], "metadata": metadata})
    assert any(p.startswith("metadata") for p in paths(created)), case
    assert count(database, Return, api.tenant.id) == 0
    ret = api.open(wanted(order))
    patched = api.patch(f"/v1/returns/{ret['id']}", {"metadata": metadata})
    assert any(p.startswith("metadata") for p in paths(patched)), case
    assert api.read(ret)["metadata"] == {}


# --- notes and items -----------------------------------------------------------------------


def test_notes_up_to_2000_characters(api: Api) -> None:
    order = api.buy(line(quantity=2))
    long, too_long = "n" * 2000, "n" * 2001
    item_note = wanted(order, note=long, reason="other")
    ret = api.open(item_note, note=long)
    assert (ret["note"], ret["items"][0]["note"]) == (long, long)

    assert paths(api.post("/v1/returns", {"items": [wanted(order)], "note": too_long})) == {"note"}
    bad_item = wanted(order, note=too_long, reason="other")
    assert paths(api.post("/v1/returns", {"items": [bad_item]})) == {"items[0].note"}
    assert paths(api.patch(f"/v1/returns/{ret['id']}", {"note": too_long})) == {"note"}
    assert paths(api.post(f"/v1/returns/{ret['id']}/approve", {"note": too_long})) == {"note"}
    assert api.read(ret)["status"] == "requested"
    approved = api.act(ret, "approve", {"note": long})
    assert approved["history"][-1]["note"] == long


def test_return_events_take_item_notes_up_to_2000_characters(api: Api) -> None:
    order = api.buy()
    note = "n" * 2001
    event = return_event(
        order_id=order["order_id"],
        customer=order["customer"],
        items=[{"product_id": order["items"][0]["product_id"], "quantity": 1, "note": note}],
    )
    assert paths(api.post("/v1/events", batch(event))) == {"events[0].items[0].note"}


def test_up_to_500_items_in_a_return(api: Api, client: TestClient, tenant: TenantFixture) -> None:
    customer = person()
    order = api.buy(*[line(str(n)) for n in range(1, 501)], customer=customer)
    items = [wanted(order, str(n)) for n in range(1, 501)]
    ret = api.open(*items)
    assert len(ret["items"]) == 500

    too_many = [*items, wanted(order, "1")]
    assert paths(api.post("/v1/returns", {"items": too_many})) == {"items"}
    assert paths(api.patch(f"/v1/returns/{ret['id']}", {"items": too_many})) == {"items"}
    session = open_session(client, tenant, {"customer_token": token(tenant, customer["id"])})
    storefront = client.post(
        "/v1/storefront/returns",
        json={"items": too_many},
        headers=tenant.publishable_headers | {HEADER: session.json()["session"]},
    )
    assert paths(storefront) == {"items"}


# --- line values and stored sums -----------------------------------------------------------


def test_a_line_worth_more_than_2_53_is_422(api: Api, database: DatabaseFixture) -> None:
    ok = purchase(items=[item(unit_price=BIG_PRICE, quantity=BIG_QUANTITY)])
    api.send(ok)
    over = purchase(items=[item(unit_price=10**12, quantity=9008)])
    assert paths(api.post("/v1/events", batch(over))) == {"events[0].items[0]"}
    over_return = return_event(
        items=[{"product_id": "SKU-1", "quantity": 9008, "unit_price": 10**12}]
    )
    assert paths(api.post("/v1/events", batch(over_return))) == {"events[0].items[0]"}
    assert count(database, Order, api.tenant.id) == 1


def test_an_event_worth_more_than_2_53_is_422(api: Api, database: DatabaseFixture) -> None:
    lines = [item(unit_price=BIG_PRICE, quantity=BIG_QUANTITY) for _ in range(2)]
    over = purchase(customer=None, items=lines)
    assert paths(api.post("/v1/events", batch(over))) == {"events[0].items"}
    assert count(database, Order, api.tenant.id) == 0


def profile_totals(api: Api, customer_id: str) -> dict[str, Any]:
    response = api.get(f"/v1/customers/{customer_id}")
    assert response.status_code == 200, response.text
    totals: dict[str, Any] = response.json()["totals"]["EUR"]
    return totals


def test_purchases_that_would_push_a_profile_past_2_53_are_422(
    api: Api, database: DatabaseFixture
) -> None:
    customer = {"id": unique("cust")}
    big = {"unit_price": BIG_PRICE, "quantity": BIG_QUANTITY}
    api.send(purchase(customer=customer, items=[item(**big)]))
    before = profile_totals(api, customer["id"])
    assert before["gross_revenue"] == BIG_PRICE * BIG_QUANTITY

    second = purchase(customer=customer, items=[item(**big)])
    response = api.post("/v1/events", batch(second))
    assert "gross_revenue" in {d.get("field") for d in details(response, 422)}
    assert profile_totals(api, customer["id"]) == before
    assert count(database, Order, api.tenant.id) == 1
    # The same, arriving in one batch with a purchase that fits: nothing of it is written.
    fits = purchase(customer={"id": unique("cust")})
    response = api.post("/v1/events", batch(fits, second))
    assert response.status_code == 422, response.text
    assert count(database, Order, api.tenant.id) == 1


def test_a_profile_is_never_pushed_past_2_63(api: Api, database: DatabaseFixture) -> None:
    """Once, lines of 10^17 pushed a profile past 2^63: SQLite stored it as REAL and every
    read of it was a 500."""
    customer = {"id": unique("cust")}
    huge = {"unit_price": 10**12, "quantity": 10**5}
    statuses = []
    for lines in (92, 1):  # 9.2 x 10^18, just below 2^63; then 10^17 more
        event = purchase(customer=customer, items=[item(**huge) for _ in range(lines)])
        statuses.append(api.post("/v1/events", batch(event)).status_code)
    profile = api.get(f"/v1/customers/{customer['id']}")
    assert profile.status_code < 500, profile.text
    listed = api.get("/v1/customers")
    assert listed.status_code == 200, listed.text
    assert statuses == [422, 422]
    assert profile.status_code == 404  # nothing was written


def apply_in_one_transaction(
    database: DatabaseFixture,
    tenant_id: str,
    facts: Sequence[tuple[str | None, str | None, Delta]],
) -> None:
    """Each fact applied on its own, as successive events of one request would be."""
    with database.db.transaction() as session:
        changes = ProfileChanges(session, tenant_id)
        for customer_id, email, delta in facts:
            changes.add(customer_id, email, "EUR", delta)
            changes.apply()


def test_refunds_that_would_push_refunded_past_2_53_roll_back(
    database: DatabaseFixture, tenant: TenantFixture
) -> None:
    facts = [
        ("cust-1", None, Delta(orders=1, gross_revenue=10)),
        ("cust-1", None, Delta(refunded=MAX_SAFE)),
        ("cust-1", None, Delta(refunded=1)),
    ]
    with pytest.raises(ValidationFailed) as raised:
        apply_in_one_transaction(database, tenant.id, facts)
    assert {d["field"] for d in raised.value.details} == {"refunded"}
    assert count(database, CustomerProfile, tenant.id) == 0


def test_a_delta_past_2_63_is_422_before_the_database_sees_it(
    database: DatabaseFixture, tenant: TenantFixture
) -> None:
    facts = [(None, "a@example.com", Delta(gross_revenue=2**64))]
    with pytest.raises(ValidationFailed) as raised:
        apply_in_one_transaction(database, tenant.id, facts)
    assert {d["field"] for d in raised.value.details} >= {"gross_revenue"}


def test_a_return_worth_more_than_2_53_is_422(api: Api, database: DatabaseFixture) -> None:
    """An anonymous order (no profile) whose two purchases each fit: a return of both."""
    big = {"unit_price": BIG_PRICE, "quantity": BIG_QUANTITY}
    first = purchase(customer=None, items=[item(line_id="1", **big)])
    api.send(first)
    api.send(purchase(customer=None, order_id=first["order_id"], items=[item(line_id="2", **big)]))
    items = [wanted(first, "1", quantity=BIG_QUANTITY), wanted(first, "2", quantity=BIG_QUANTITY)]
    response = api.post("/v1/returns", {"items": items})
    assert ("items[1]", "total_out_of_range") in error_codes(response)
    assert count(database, Return, api.tenant.id) == 0
    preview = api.post("/v1/returns/preview", {"items": items})
    assert preview.status_code == 200, preview.text
    assert preview.json()["total"] <= MAX_SAFE


# --- valid Unicode -------------------------------------------------------------------------

LONE = '"\\ud800"'  # a JSON string holding a lone surrogate escape


def raw_post(client: TestClient, path: str, text: str, headers: dict[str, str]) -> Any:
    return client.post(
        path, content=text.encode(), headers=headers | {"Content-Type": "application/json"}
    )


def test_a_lone_surrogate_in_an_event_names_its_field(
    client: TestClient, tenant: TenantFixture
) -> None:
    event = purchase()
    text = json.dumps(batch(event)).replace('"Tee"', LONE)
    response = raw_post(client, "/v1/events", text, tenant.headers)
    assert paths(response, (400, 422)) == {"events[0].items[0].name"}


def test_a_lone_surrogate_in_a_return_names_its_field(api: Api, client: TestClient) -> None:
    order = api.buy()
    item_text = (
        f'{{"order_id": "{order["order_id"]}", "line_id": "1", "quantity": 1, '
        f'"reason": "other", "note": {LONE}}}'
    )
    headers = api.tenant.headers
    response = raw_post(client, "/v1/returns", f'{{"items": [{item_text}]}}', headers)
    assert paths(response, (400, 422)) == {"items[0].note"}
    response = raw_post(
        client, "/v1/returns", '{"items": [], "metadata": {"k": "\\udfff"}}', headers
    )
    assert "metadata.k" in paths(response, (400, 422))
    ret = api.open(wanted(order))
    response = client.patch(
        f"/v1/returns/{ret['id']}",
        content=f'{{"note": {LONE}}}'.encode(),
        headers=headers | {"Content-Type": "application/json"},
    )
    assert paths(response, (400, 422)) == {"note"}
    # A surrogate pair is one character, and fine.
    response = raw_post(
        client, f"/v1/returns/{ret['id']}/approve", '{"note": "\\ud83d\\ude00"}', headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["history"][-1]["note"] == "\U0001f600"


def test_a_lone_surrogate_in_storefront_and_segment_bodies_names_its_field(
    client: TestClient, tenant: TenantFixture
) -> None:
    response = raw_post(
        client,
        "/v1/storefront/sessions",
        '{"order_id": "o-1", "email": "a\\ud800@example.com"}',
        tenant.publishable_headers,
    )
    assert paths(response, (400, 422)) == {"email"}
    response = raw_post(client, "/v1/segments", f'{{"name": "s", "where": {LONE}}}', tenant.headers)
    assert paths(response, (400, 422)) == {"where"}


@pytest.mark.parametrize("literal", ["\\ud800", "\\udfff", "\\ud800x", "\\ude00\\ud83d"])
def test_a_lone_surrogate_in_a_where_expression_is_400(
    client: TestClient, tenant: TenantFixture, literal: str
) -> None:
    response = client.get(
        "/v1/customers", params={"where": f'email = "{literal}"'}, headers=tenant.headers
    )
    assert paths(response, 400) == {"where"}
    response = client.post(
        "/v1/segments", json={"name": "s", "where": f'email = "{literal}"'}, headers=tenant.headers
    )
    assert paths(response, 400) == {"where"}


def test_a_surrogate_pair_in_a_where_expression_is_one_character(
    client: TestClient, tenant: TenantFixture
) -> None:
    response = client.get(
        "/v1/customers",
        params={"where": 'customer_id = "\\ud83d\\ude00"'},
        headers=tenant.headers,
    )
    assert response.status_code == 200, response.text


# --- return numbers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reference", ["R-²", "R-" + "9" * 20, "R-" + "1" * 19, "R-٣", "R-1²", "r-" + "0" * 30 + "1"]
)
def test_odd_return_numbers_are_404(api: Api, reference: str) -> None:
    details(api.get(f"/v1/returns/{reference}"), 404)
    listed = api.get("/v1/returns", params={"q": reference})
    assert listed.status_code == 200, listed.text
    assert listed.json()["data"] == []


def test_zero_padded_numbers_still_find_their_return(api: Api) -> None:
    ret = api.open(wanted(api.buy()))
    number = int(ret["number"].removeprefix("R-"))
    assert api.read(f"R-{number:020d}")["id"] == ret["id"]


# --- CSV -----------------------------------------------------------------------------------

FORMULAS = ["=1+2", "+1", "-1", "@SUM(A1)", "\tx", "\rx", '=HYPERLINK("http://x")']


def test_csv_cells_that_a_spreadsheet_would_run_are_quoted(api: Api) -> None:
    ids = {}
    for text in FORMULAS:
        customer_id = f"{text}{unique('c')}"
        order = api.buy(line(unit_price=100), customer={"id": customer_id})
        ids[customer_id] = text
        # a refund larger than the purchase: net_revenue is negative
        api.record_return(
            order,
            {"product_id": order["items"][0]["product_id"], "quantity": 1},
            refund={"amount": 250},
        )
    response = api.http.get("/v1/customers", headers=api.tenant.headers | {"Accept": "text/csv"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text, newline="")))
    by_id = {row["customer_id"]: row for row in rows}
    assert set(by_id) == {f"'{customer_id}" for customer_id in ids}
    for row in rows:
        # numbers stay numbers: a negative amount is written as it is
        assert row["net_revenue"] == "-150"
        assert row["gross_revenue"] == "100"
        assert row["return_rate_value"] == "2.5"


# --- digits that are not ASCII -------------------------------------------------------------


@pytest.mark.parametrize("value", ['"²"', "²", '"\uff11"', '"٣"'])
def test_an_if_match_of_non_ascii_digits_is_400(value: str) -> None:
    """Header values are latin-1 text: "²" passes str.isdigit() but not int()."""
    with pytest.raises(InvalidRequest) as raised:
        asyncio.run(if_match_version(value))
    assert raised.value.details[0]["path"] == "If-Match"


def test_an_imported_csv_cell_of_non_ascii_digits_is_a_bad_row() -> None:
    event = purchase(items=[item(line_id="1")])
    row = {
        "type": "purchase",
        "id": event["id"],
        "timestamp": event["timestamp"],
        "order_id": event["order_id"],
        "currency": "EUR",
        "line_id": "1",
        "product_id": "SKU-1",
        "quantity": "²",
        "unit_price": "9" * 5000,
    }
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    writer.writerow(row)
    ((_, raw),) = list(read_csv(io.BytesIO(buffer.getvalue().encode())))
    checked = check_event(raw)
    assert isinstance(checked, list)
    assert {error["path"] for error in checked} == {"items[0].quantity", "items[0].unit_price"}


@pytest.mark.parametrize("path", ["/v1/events", "/v1/returns/ret_x/attachments"])
def test_a_content_length_of_non_ascii_digits_is_no_500(
    app: Any, tenant: TenantFixture, path: str
) -> None:
    """Sent as raw ASGI: HTTP clients (and servers) refuse such a header, the app must too."""
    messages: list[dict[str, Any]] = []
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"testserver"),
            (b"authorization", f"Bearer {tenant.secret_key}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", b"\xb2"),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in messages if m["type"] == "http.response.start")
    assert 400 <= status < 500
