"""Customer profiles (API.md 5): net lifetime value per currency, identity, flags, erasure."""

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from returnstack.customers.profiles import rebuild
from tests.conftest import DatabaseFixture, TenantFixture
from tests.e2e import run_cli
from tests.factories import item, purchase, unique
from tests.returns.helpers import Api, all_outbox, line, wanted
from tests.storefront.test_storefront import token as customer_token


@pytest.fixture
def api(client: TestClient, tenant: TenantFixture) -> Api:
    return Api(client, tenant)


def profile(api: Api, customer_id: str, expect: int = 200) -> dict[str, Any]:
    response = api.get(f"/v1/customers/{customer_id}")
    assert response.status_code == expect, response.text
    body: dict[str, Any] = response.json()
    return body


def lookup(api: Api, email: str, expect: int = 200) -> dict[str, Any]:
    response = api.get("/v1/customers/lookup", params={"email": email})
    assert response.status_code == expect, response.text
    body: dict[str, Any] = response.json()
    return body


def email() -> str:
    return f"{unique('u')}@example.com"


def check_rebuild(database: DatabaseFixture, tenant: TenantFixture) -> None:
    with database.db.transaction() as session:
        report = rebuild(session, tenant_id=tenant.id, write=False)
    assert report.differences == 0, report.examples


def test_purchases_and_a_recorded_return_add_up_per_currency(
    api: Api, database: DatabaseFixture, tenant: TenantFixture
) -> None:
    who = {"id": unique("cust"), "email": email()}
    first = api.buy(
        line("1", quantity=2, unit_price=1799), line("2", unit_price=500), customer=who, days_ago=3
    )
    api.buy(
        line("1", unit_price=10000),
        customer=who,
        days_ago=1,
        channel="offline",
        store={"id": "berlin-01"},
    )
    api.buy(line("1", unit_price=700), customer=who, currency="USD", days_ago=2)
    api.record_return(
        first,
        {
            "line_id": "1",
            "product_id": first["items"][0]["product_id"],
            "quantity": 1,
            "reason": "size_too_small",
        },
        refund={"amount": 1799, "method": "original_payment"},
    )

    body = profile(api, who["id"])
    assert body["customer"] == {"id": who["id"], "email": who["email"], "emails": [who["email"]]}
    eur = body["totals"]["EUR"]
    assert eur == {
        "orders": 2,
        "items_purchased": 4,
        "gross_revenue": 2 * 1799 + 500 + 10000,
        "returns": 1,
        "items_returned": 1,
        "refunded": 1799,
        "net_revenue": 2 * 1799 + 500 + 10000 - 1799,
        "return_rate_items": 0.25,
        "return_rate_value": 1799 / (2 * 1799 + 500 + 10000),
    }
    assert body["totals"]["USD"]["gross_revenue"] == 700
    assert body["totals"]["USD"]["refunded"] == 0
    assert body["channels"] == {
        "online": {"orders": 2, "returns": 1},
        "offline": {"orders": 1, "returns": 0},
    }

    def moment(text: str) -> datetime:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))

    assert moment(body["first_order_at"]) == moment(first["timestamp"])  # 3 days ago
    assert body["last_return_at"] is not None
    assert body["flags"] == []
    assert lookup(api, who["email"].upper()) == body
    check_rebuild(database, tenant)


def test_a_duplicate_event_changes_nothing(api: Api) -> None:
    who = {"id": unique("cust")}
    event = purchase(customer=who, items=[item(quantity=1, unit_price=1000)])
    api.send(event)
    response = api.post("/v1/events", {"events": [event]})
    assert response.json()["duplicates"] == 1
    assert profile(api, who["id"])["totals"]["EUR"]["gross_revenue"] == 1000


def test_a_later_purchase_event_adds_only_new_lines_to_the_order_owner(api: Api) -> None:
    who = {"id": unique("cust")}
    event = purchase(customer=who, items=[item(line_id="1", quantity=1, unit_price=1000)])
    api.send(event)
    api.send(
        purchase(
            order_id=event["order_id"],
            customer={"id": unique("someone-else")},
            items=[
                item(line_id="1", quantity=5, unit_price=9),
                item(line_id="2", quantity=2, unit_price=300),
            ],
        )
    )
    totals = profile(api, who["id"])["totals"]["EUR"]
    assert (totals["orders"], totals["items_purchased"], totals["gross_revenue"]) == (1, 3, 1600)


def test_guest_history_merges_into_the_customer_once_linked(
    api: Api, database: DatabaseFixture, tenant: TenantFixture
) -> None:
    guest = email()
    order = api.buy(line("1", unit_price=2000), customer={"email": guest}, days_ago=5)
    api.record_return(
        order,
        {
            "line_id": "1",
            "product_id": order["items"][0]["product_id"],
            "quantity": 1,
            "reason": "color",
        },
        refund={"amount": 2000, "method": "original_payment"},
    )
    as_guest = lookup(api, guest)
    assert as_guest["customer"] == {"id": None, "email": guest, "emails": [guest]}
    assert as_guest["totals"]["EUR"]["refunded"] == 2000

    customer_id = unique("cust")
    profile(api, customer_id, expect=404)
    api.buy(line("1", unit_price=3000), customer={"id": customer_id, "email": guest})
    merged = profile(api, customer_id)
    assert merged["totals"]["EUR"]["orders"] == 2
    assert merged["totals"]["EUR"]["gross_revenue"] == 5000
    assert merged["totals"]["EUR"]["refunded"] == 2000
    assert lookup(api, guest) == merged
    # Later facts under the email alone count for the customer, once.
    api.buy(line("1", unit_price=100), customer={"email": guest})
    assert profile(api, customer_id)["totals"]["EUR"]["gross_revenue"] == 5100
    # The first link wins: the email does not move to another customer.
    api.buy(line("1", unit_price=1), customer={"id": unique("other"), "email": guest})
    assert lookup(api, guest)["customer"]["id"] == customer_id
    check_rebuild(database, tenant)


def test_lifecycle_refund_counts_only_when_refunded(
    api: Api, database: DatabaseFixture, tenant: TenantFixture
) -> None:
    who = {"id": unique("cust"), "email": email()}
    order = api.buy(line("1", quantity=2, unit_price=2500), customer=who)
    ret = api.open(wanted(order, quantity=2, reason="defective"), customer={"id": who["id"]})
    api.act(ret, "approve", {})
    pending = profile(api, who["id"])["totals"]["EUR"]
    assert (pending["returns"], pending["items_returned"], pending["refunded"]) == (0, 0, 0)
    assert pending["net_revenue"] == 5000

    api.act(
        ret, "receive", {"items": [{"order_id": order["order_id"], "line_id": "1", "quantity": 1}]}
    )
    received = profile(api, who["id"])["totals"]["EUR"]
    assert (received["returns"], received["items_returned"], received["refunded"]) == (1, 1, 0)

    api.act(
        ret, "receive", {"items": [{"order_id": order["order_id"], "line_id": "1", "quantity": 1}]}
    )
    api.act(ret, "refund", {"method": "original_payment", "amount": 3000})
    refunded = profile(api, who["id"])["totals"]["EUR"]
    assert (refunded["returns"], refunded["items_returned"], refunded["refunded"]) == (1, 2, 3000)
    assert refunded["net_revenue"] == 2000
    assert refunded["return_rate_value"] == 0.6
    check_rebuild(database, tenant)


def test_serial_returner_flag_is_set_with_an_outbox_event_and_cleared(
    api: Api, database: DatabaseFixture, tenant: TenantFixture
) -> None:
    who = {"id": unique("cust"), "email": email()}
    orders = [api.buy(line("1", unit_price=1000), customer=who) for _ in range(3)]
    for order in orders[:2]:
        api.record_return(
            order,
            {
                "line_id": "1",
                "product_id": order["items"][0]["product_id"],
                "quantity": 1,
                "reason": "unwanted",
            },
            refund={"amount": 1000, "method": "original_payment"},
        )
    body = profile(api, who["id"])
    assert body["flags"] == ["serial_returner"]  # 3 orders, 2/3 of the value refunded
    flagged = [row for row in all_outbox(database, tenant.id) if row.type == "customer.flagged"]
    assert len(flagged) == 1
    assert flagged[0].data["customer"]["id"] == who["id"]
    assert flagged[0].data["flags"] == ["serial_returner"]

    api.buy(line("1", unit_price=100000), customer=who)  # the rate drops far below 0.5
    assert profile(api, who["id"])["flags"] == []
    # A stricter policy re-evaluates: nobody is flagged at a 100 % threshold.
    api.set_policy(serial_returner={"min_orders": 1, "return_rate_value": 0.01})
    assert profile(api, who["id"])["flags"] == ["serial_returner"]
    # A laxer one clears the flag again (policy changes re-evaluate both ways).
    api.set_policy(serial_returner={"min_orders": 10, "return_rate_value": 0.01})
    assert profile(api, who["id"])["flags"] == []

    news = [row for row in all_outbox(database, tenant.id) if row.type.startswith("customer.")]
    assert [row.type for row in news] == [
        "customer.flagged",
        "customer.unflagged",  # the big purchase
        "customer.flagged",  # the stricter policy
        "customer.unflagged",  # the laxer one
    ]
    for row in news:
        assert row.data["customer"]["id"] == who["id"]
        assert row.data["id"] == body["id"]
    cleared = news[1].data
    assert cleared["unflagged_currencies"] == ["EUR"]
    assert cleared["flags"] == []
    assert cleared["totals"]["EUR"]["gross_revenue"] == 103000
    check_rebuild(database, tenant)


def test_rebuild_reports_and_repairs_a_drifted_profile(
    api: Api, database: DatabaseFixture, tenant: TenantFixture, tmp_path: Path
) -> None:
    who = {"id": unique("cust")}
    api.buy(line("1", unit_price=4200), customer=who)
    with database.db.transaction() as session:
        session.execute(
            text("UPDATE customer_profiles SET gross_revenue = 1 WHERE tenant_id = :t"),
            {"t": tenant.id},
        )
    checked = run_cli(
        "profiles",
        "rebuild",
        "--tenant",
        tenant.id,
        "--check",
        "--json",
        database_url=database.url,
        cwd=tmp_path,
    )
    assert checked.returncode == 1, str(checked)
    report = checked.json()
    assert report["differences"] == 1
    assert report["tenants"][0]["examples"][0]["fields"]["gross_revenue"] == [1, 4200]
    assert profile(api, who["id"])["totals"]["EUR"]["gross_revenue"] == 1  # only checked
    repaired = run_cli(
        "profiles",
        "rebuild",
        "--tenant",
        tenant.id,
        "--json",
        database_url=database.url,
        cwd=tmp_path,
    )
    assert repaired.returncode == 0, str(repaired)
    assert repaired.json()["tenants"][0]["written"] is True
    assert profile(api, who["id"])["totals"]["EUR"]["gross_revenue"] == 4200
    check_rebuild(database, tenant)


def test_erasure_removes_the_person_and_keeps_anonymous_facts(
    api: Api, database: DatabaseFixture, tenant: TenantFixture
) -> None:
    who = {"id": unique("cust"), "email": email()}
    order = api.buy(line("1", quantity=3, unit_price=1000), customer=who)
    ret = api.open(
        wanted(order, quantity=1, reason="other", note="call me at 555"), customer={"id": who["id"]}
    )
    png = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + b"png-body" * 10
    uploaded = api.http.post(
        f"/v1/returns/{ret['id']}/attachments",
        files={"file": ("me.png", png, "image/png")},
        headers=api.tenant.headers,
    )
    assert uploaded.status_code == 201, uploaded.text
    stored = database.settings.data_dir / "attachments" / tenant.id / ret["id"]
    assert any(stored.iterdir())
    session = api.post(
        "/v1/storefront/sessions",
        {"customer_token": customer_token(api.tenant, who["id"])},
        headers=api.tenant.publishable_headers,
    )
    assert session.status_code == 201, session.text
    token = session.json()["session"]

    assert api.delete(f"/v1/customers/{who['id']}").status_code == 204
    assert not any(stored.iterdir())  # the files went with the commit
    refused = api.http.get("/v1/storefront/orders", headers={"X-Storefront-Session": token})
    assert refused.status_code == 401
    profile(api, who["id"], expect=404)
    lookup(api, who["email"], expect=404)
    assert api.delete(f"/v1/customers/{who['id']}").status_code == 404
    kept = api.order(order["order_id"])
    assert kept["customer"] in (None, {"id": None, "email": None})
    assert kept["lines"][0]["claimed_quantity"] == 1  # the anonymous facts still count
    erased = api.read(ret)
    assert erased["customer"] in (None, {"id": None, "email": None})
    assert erased["items"][0]["note"] is None
    for row in all_outbox(database, tenant.id):
        assert who["email"] not in str(row.data), row.type
        assert who["id"] not in str(row.data), row.type
    check_rebuild(database, tenant)


def test_another_tenant_never_sees_a_profile(
    api: Api, client: TestClient, other_tenant: TenantFixture
) -> None:
    who = {"id": unique("cust"), "email": email()}
    api.buy(line("1"), customer=who)
    other = Api(client, other_tenant)
    profile(other, who["id"], expect=404)
    lookup(other, who["email"], expect=404)
    assert other.delete(f"/v1/customers/{who['id']}").status_code == 404
    profile(api, who["id"])


def test_publishable_key_is_forbidden(client: TestClient, tenant: TenantFixture) -> None:
    response = client.get("/v1/customers/anyone", headers=tenant.publishable_headers)
    assert response.status_code == 403
