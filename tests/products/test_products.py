"""Product signals (API.md 6): stats, smoothing, category rollups, rankings, lists; every
expectation is worked out by hand in the comments. Default settings: prior strength k = 20
units, a category is a prior from 100 units sold."""

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from returnstack.products import upkeep
from returnstack.products.rebuild import rebuild
from returnstack.products.schemas import ProductStats, RankedProduct, Ranking
from tests.conftest import DatabaseFixture, TenantFixture
from tests.e2e import run_cli
from tests.factories import unique
from tests.products.helpers import report_events
from tests.returns.helpers import Api, line, person, wanted

K = 20


def stats(api: Api, product_id: str, expect: int = 200) -> dict[str, Any]:
    response = api.get(f"/v1/products/{product_id}/stats")
    assert response.status_code == expect, response.text
    body: dict[str, Any] = response.json()
    return body


def rank(api: Api, body: dict[str, Any], expect: int = 200) -> dict[str, Any]:
    response = api.post("/v1/rankings", body)
    assert response.status_code == expect, response.text
    result: dict[str, Any] = response.json()
    return result


def check_rebuild(database: DatabaseFixture, tenant: TenantFixture) -> None:
    """The kept signals equal a recomputation from the facts."""
    with database.db.transaction() as session:
        report = rebuild(session, tenant_id=tenant.id, write=False)
    assert report.differences == 0, report.examples


@dataclass
class ProductsApi(Api):
    database: DatabaseFixture


@pytest.fixture
def api(client: TestClient, tenant: TenantFixture, database: DatabaseFixture) -> ProductsApi:
    return ProductsApi(client, tenant, database)


def shop(api: Api) -> dict[str, str]:
    """The small catalogue of the worked examples:

    A  Apparel/Tops   sold 100, returned 20
    B  Apparel/Tops   sold 1,   returned 1
    C  Apparel/Shoes  sold 4,   returned 0
    D  Home           sold 50,  returned 5

    Rollups: Apparel/Tops 101 sold / 21 back; Apparel/Shoes 4 / 0; Apparel 105 / 21;
    Home 50 / 5; the tenant 155 / 26.
    """
    ids = {name: unique(f"SKU-{name}") for name in "ABCD"}
    order_a = api.buy(line("1", product_id=ids["A"], quantity=100, category="Apparel/Tops"))
    order_b = api.buy(line("1", product_id=ids["B"], quantity=1, category="Apparel/Tops"))
    api.buy(line("1", product_id=ids["C"], quantity=4, category="Apparel/Shoes"))
    order_d = api.buy(line("1", product_id=ids["D"], quantity=50, category="Home"))
    api.record_return(order_a, {"product_id": ids["A"], "quantity": 20, "reason": "size_too_small"})
    api.record_return(order_b, {"product_id": ids["B"], "quantity": 1, "reason": "defective"})
    api.record_return(order_d, {"product_id": ids["D"], "quantity": 5, "reason": "unwanted"})
    return ids


def test_smoothing_shrinks_toward_the_nearest_category_with_enough_sales(api: ProductsApi) -> None:
    ids = shop(api)

    # B: 1 sold, 1 back. Its category Apparel/Tops has 101 >= 100 units sold: the prior is
    # 21/101. smoothed = (1 + 20 * 21/101) / (1 + 20) = 521/2121 = 0.2456...
    b = stats(api, ids["B"])
    assert (b["units_sold"], b["units_returned"], b["return_rate"]) == (1, 1, 1.0)
    assert b["prior_source"] == "category"
    assert b["prior_category"] == "Apparel/Tops"
    assert b["prior_rate"] == pytest.approx(21 / 101)
    assert b["prior_strength"] == K
    assert b["smoothed_return_rate"] == pytest.approx(521 / 2121)
    assert b["reasons"] == {"defective": 1}
    assert b["categories"] == [
        {"path": "Apparel/Tops", "units_sold": 101, "units_returned": 21, "return_rate": 21 / 101},
        {"path": "Apparel", "units_sold": 105, "units_returned": 21, "return_rate": 0.2},
    ]

    # A: 100 sold, 20 back: (20 + 20 * 21/101) / 120 = 2440/12120 = 0.2013...
    a = stats(api, ids["A"])
    assert a["return_rate"] == 0.2
    assert a["smoothed_return_rate"] == pytest.approx(2440 / 12120)

    # C: Apparel/Shoes has 4 units sold (< 100): its parent Apparel (105 sold, 21 back) is
    # the prior, 0.2. smoothed = (0 + 20 * 0.2) / (4 + 20) = 4/24.
    c = stats(api, ids["C"])
    assert (c["prior_source"], c["prior_category"]) == ("category", "Apparel")
    assert c["prior_rate"] == pytest.approx(0.2)
    assert c["smoothed_return_rate"] == pytest.approx(4 / 24)

    # D: Home has 50 units sold (< 100), no parent: the tenant's rate 26/155 is the prior.
    # smoothed = (5 + 20 * 26/155) / (50 + 20) = 1295/10850.
    d = stats(api, ids["D"])
    assert (d["prior_source"], d["prior_category"]) == ("tenant", None)
    assert d["prior_rate"] == pytest.approx(26 / 155)
    assert d["smoothed_return_rate"] == pytest.approx(1295 / 10850)
    check_rebuild(api.database, api.tenant)


def test_ranking_demotes_by_smoothed_return_rate_and_explains_each_score(api: Api) -> None:
    ids = shop(api)
    never_seen = unique("SKU-NEW")
    # score = 1 - smoothed (weight 1, base 1.0):
    # B 1 - 0.2456 = 0.7544; A 1 - 0.2013 = 0.7987; C 1 - 0.1667 = 0.8333;
    # D 1 - 0.1194 = 0.8806; never seen: the tenant's prior, 1 - 26/155 = 0.8323.
    body = rank(api, {"product_ids": [ids["B"], ids["A"], ids["C"], ids["D"], never_seen]})
    ranking = body["ranking"]
    assert [row["product_id"] for row in ranking] == [
        ids["D"],
        ids["C"],
        never_seen,
        ids["A"],
        ids["B"],
    ]
    by_id = {row["product_id"]: row for row in ranking}
    assert by_id[ids["B"]]["score"] == pytest.approx(1 - 521 / 2121)
    assert by_id[ids["B"]]["base_score"] == 1.0
    assert by_id[ids["B"]]["adjustment"] == pytest.approx(1 - 521 / 2121)
    assert by_id[ids["B"]]["prior_category"] == "Apparel/Tops"
    new = by_id[never_seen]
    assert new["known"] is False
    assert (new["units_sold"], new["prior_source"]) == (0, "tenant")
    assert new["smoothed_return_rate"] == pytest.approx(26 / 155)

    # Base scores and the weight: B at 2.0 with weight 2 scores 2 * (1 - 0.2456)^2 = 1.138,
    # ahead of D (1.0 * (1 - 0.1194)^2 = 0.7755).
    body = rank(
        api,
        {"product_ids": [ids["D"], ids["B"]], "scores": {ids["B"]: 2.0}, "return_weight": 2},
    )
    rows = body["ranking"]
    assert [row["product_id"] for row in rows] == [ids["B"], ids["D"]]
    assert rows[0]["score"] == pytest.approx(2 * (1 - 521 / 2121) ** 2)
    assert rows[1]["score"] == pytest.approx((1 - 1295 / 10850) ** 2)

    # Weight 0 ignores returns: every score is its base, and ties keep the input order.
    body = rank(api, {"product_ids": [ids["B"], ids["A"], never_seen], "return_weight": 0})
    assert [row["product_id"] for row in body["ranking"]] == [ids["B"], ids["A"], never_seen]
    assert {row["score"] for row in body["ranking"]} == {1.0}


def test_lifecycle_returns_count_once_received_and_refunds_are_spread(api: ProductsApi) -> None:
    product_x, product_y = unique("SKU-X"), unique("SKU-Y")
    customer = person()
    order = api.buy(
        line("1", product_id=product_x, quantity=1, unit_price=1000, category="Home/Kitchen"),
        line("2", product_id=product_y, quantity=2, unit_price=500, variant_id="Y-RED"),
        customer=customer,
    )
    ret = api.open(
        wanted(order, "1", quantity=1, reason="defective"),
        wanted(order, "2", quantity=2, reason="unwanted"),
        customer=customer,
    )
    ret = api.act(ret, "approve")
    # Requested and approved, nothing back yet: nothing counts as returned.
    assert stats(api, product_x)["units_returned"] == 0
    receipt_x = {"order_id": order["order_id"], "line_id": "1", "quantity": 1}
    api.act(ret, "receive", {"items": [receipt_x]})
    x = stats(api, product_x)
    assert (x["units_returned"], x["reasons"]) == (1, {"defective": 1})
    assert x["categories"][0]["path"] == "Home/Kitchen"
    assert stats(api, product_y)["units_returned"] == 0

    # 500 refunded, spread over the items by their value (1 x 1000 and 2 x 500, asked
    # for), not by what is back yet: 250 each.
    api.act(ret, "refund", {"method": "original_payment", "amount": 500})
    assert stats(api, product_x)["refunded"] == {"EUR": 250}
    assert stats(api, product_y)["refunded"] == {"EUR": 250}

    # Closed, reopened, the rest received and 501 more refunded: the return's 1001 is spread
    # as a whole, 500.5 each; the remainders tie and the earlier item takes the odd unit.
    api.act(ret, "close")
    api.act(ret, "reopen")
    api.act(ret, "approve")
    receipt_y = {"order_id": order["order_id"], "line_id": "2", "quantity": 2}
    api.act(ret, "receive", {"items": [receipt_y]})
    api.act(ret, "refund", {"method": "original_payment", "amount": 501})
    x, y = stats(api, product_x), stats(api, product_y)
    assert (x["refunded"], y["refunded"]) == ({"EUR": 501}, {"EUR": 500})
    assert (y["units_returned"], y["reasons"]) == (2, {"unwanted": 2})
    assert y["by_variant"] == {"Y-RED": {"units_sold": 2, "units_returned": 2, "return_rate": 1.0}}
    check_rebuild(api.database, api.tenant)


def test_a_recorded_return_refund_is_spread_by_value_and_channels_and_stores_split(
    api: Api,
) -> None:
    product = unique("SKU")
    store = {"id": unique("store"), "name": "Mitte"}
    order = api.buy(
        line("1", product_id=product, quantity=3, unit_price=2000),
        channel="offline",
        store=store,
    )
    api.buy(line("1", product_id=product, quantity=1, unit_price=2000))  # online
    # 2 units back in the store, 3000 refunded, all of it on this product's one item.
    api.record_return(
        order,
        {"product_id": product, "quantity": 2, "reason": "too_large"},
        channel="offline",
        store=store,
        refund={"amount": 3000, "method": "original_payment"},
    )
    body = stats(api, product)
    assert body["refunded"] == {"EUR": 3000}
    assert body["by_channel"] == {
        "offline": {"units_sold": 3, "units_returned": 2, "return_rate": 2 / 3},
        "online": {"units_sold": 1, "units_returned": 0, "return_rate": 0.0},
    }
    assert body["by_store"] == {
        store["id"]: {"units_sold": 3, "units_returned": 2, "return_rate": 2 / 3}
    }
    assert body["reported"] == {"units_sold": 0, "units_returned": 0, "refunded": {}}


def _kept_sales(api: ProductsApi, product: str) -> tuple[bool, dict[tuple[str, str, str], int]]:
    """Whether the product's sales are kept, and its kept units sold per (variant, channel,
    store) (the rows the upkeep writes)."""
    with api.database.db.transaction(write=False) as session:
        kept = session.execute(
            text("SELECT sales_kept FROM product_signals WHERE tenant_id = :t AND product_id = :p"),
            {"t": api.tenant.id, "p": product},
        ).scalar_one()
        rows = session.execute(
            text(
                "SELECT variant_id, channel, store_id, units_sold FROM product_breakdowns"
                " WHERE tenant_id = :t AND product_id = :p AND units_sold > 0"
            ),
            {"t": api.tenant.id, "p": product},
        ).all()
    return bool(kept), {(v, c, s): units for v, c, s, units in rows}


def test_sales_per_variant_and_store_are_kept_from_the_threshold_on(
    api: ProductsApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Below KEEP_SALES_FROM units a product's sales per variant, channel and store are read
    from its lines (no breakdown row is written for a sale); the transaction that takes it
    to the threshold copies its lines into its breakdowns, and later sales add to them. The
    stats are the same all along, and the rebuild agrees at every step."""
    monkeypatch.setattr(upkeep, "KEEP_SALES_FROM", 5)
    product = unique("SKU")
    store = {"id": unique("store")}
    api.buy(line("1", product_id=product, variant_id="S", quantity=2))
    api.buy(
        line("1", product_id=product, variant_id="M", quantity=1), channel="offline", store=store
    )
    assert _kept_sales(api, product) == (False, {})
    body = stats(api, product)
    assert body["units_sold"] == 3
    assert body["by_variant"] == {
        "M": {"units_sold": 1, "units_returned": 0, "return_rate": 0.0},
        "S": {"units_sold": 2, "units_returned": 0, "return_rate": 0.0},
    }
    assert body["by_store"] == {
        store["id"]: {"units_sold": 1, "units_returned": 0, "return_rate": 0.0}
    }
    check_rebuild(api.database, api.tenant)
    # 3 + 2 = 5 units: kept from this purchase on, its own line included.
    api.buy(line("1", product_id=product, variant_id="S", quantity=2))
    assert _kept_sales(api, product) == (
        True,
        {("S", "online", ""): 4, ("M", "offline", store["id"]): 1},
    )
    check_rebuild(api.database, api.tenant)
    api.buy(
        line("1", product_id=product, variant_id="M", quantity=3), channel="offline", store=store
    )
    assert _kept_sales(api, product) == (
        True,
        {("S", "online", ""): 4, ("M", "offline", store["id"]): 4},
    )
    body = stats(api, product)
    assert body["units_sold"] == 8
    assert body["by_variant"] == {
        "M": {"units_sold": 4, "units_returned": 0, "return_rate": 0.0},
        "S": {"units_sold": 4, "units_returned": 0, "return_rate": 0.0},
    }
    assert body["by_channel"] == {
        "offline": {"units_sold": 4, "units_returned": 0, "return_rate": 0.0},
        "online": {"units_sold": 4, "units_returned": 0, "return_rate": 0.0},
    }
    check_rebuild(api.database, api.tenant)
    # A list page reads both kinds: this product (kept) and a small one (from its lines).
    small = unique("SKU")
    api.buy(line("1", product_id=small, variant_id="L", quantity=1))
    listed = {
        row["product_id"]: row["by_variant"]
        for row in api.get("/v1/products?limit=100").json()["data"]
        if row["product_id"] in (product, small)
    }
    assert listed == {
        product: body["by_variant"],
        small: {"L": {"units_sold": 1, "units_returned": 0, "return_rate": 0.0}},
    }


def test_category_follows_the_latest_line_and_rollups_move_with_it(api: ProductsApi) -> None:
    product = unique("SKU")
    api.buy(line("1", product_id=product, quantity=3, category="Old/Shelf"), days_ago=5)
    # An older sale naming another category does not move it.
    api.buy(line("1", product_id=product, quantity=1, category="Elsewhere"), days_ago=9)
    assert stats(api, product)["category"] == "Old/Shelf"
    assert stats(api, product)["categories"][0] == {
        "path": "Old/Shelf",
        "units_sold": 4,
        "units_returned": 0,
        "return_rate": 0.0,
    }
    # A newer one does, with all 5 units: Old/Shelf rolls up nothing any more.
    api.buy(line("1", product_id=product, quantity=1, category=" New / Rack/"), days_ago=1)
    body = stats(api, product)
    assert body["category"] == "New/Rack"
    assert [c["path"] for c in body["categories"]] == ["New/Rack", "New"]
    assert body["categories"][0]["units_sold"] == 5
    listed = api.get("/v1/products", params={"category": "Old"}).json()["data"]
    assert product not in {row["product_id"] for row in listed}
    check_rebuild(api.database, api.tenant)


def test_products_list_sorts_filters_and_pages(api: Api) -> None:
    ids = shop(api)
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"sort": "-return_rate", "limit": 2, "category": "Apparel"}
        if cursor:
            params["cursor"] = cursor
        response = api.get("/v1/products", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        seen.extend(page["data"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    # Apparel holds A (0.2), B (1.0), C (0.0): by return rate, highest first.
    assert [row["product_id"] for row in seen] == [ids["B"], ids["A"], ids["C"]]
    assert seen[0]["smoothed_return_rate"] == pytest.approx(521 / 2121)

    response = api.get("/v1/products", params={"min_units_sold": 50, "sort": "units_sold"})
    assert [row["product_id"] for row in response.json()["data"]] == [ids["D"], ids["A"]]


def test_unknown_product_is_404(api: Api) -> None:
    body = stats(api, unique("SKU-NONE"), expect=404)
    assert body["error"]["type"] == "not_found"


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"product_ids": [f"P{i}" for i in range(1001)]}, "product_ids"),
        ({"product_ids": []}, "product_ids"),
        ({"product_ids": ["A", "B", "A"]}, "product_ids[2]"),
        ({"product_ids": ["A"], "scores": {"B": 1.0}}, "scores.B"),
        ({"product_ids": ["A"], "scores": {"A": -1.0}}, "scores.A"),
        ({"product_ids": ["A"], "scores": {"A": "high"}}, "scores.A"),
        ({"product_ids": ["A"], "return_weight": -1}, "return_weight"),
        ({"product_ids": ["A"], "boost": 1}, "boost"),
    ],
)
def test_bad_rankings_are_422_naming_the_field(api: Api, body: dict[str, Any], path: str) -> None:
    response = api.post("/v1/rankings", body)
    assert response.status_code == 422, response.text
    paths = [detail["path"] for detail in response.json()["error"]["details"]]
    assert any(found == path or found.startswith(path + ".") for found in paths), paths


def test_an_idempotency_key_replays_a_ranking_and_refuses_another_body(api: Api) -> None:
    # API.md 1: Idempotency-Key on any POST.
    key = {"Idempotency-Key": unique("rank")}
    first = api.post("/v1/rankings", {"product_ids": ["A", "B"]}, headers=key)
    again = api.post("/v1/rankings", {"product_ids": ["A", "B"]}, headers=key)
    assert first.status_code == again.status_code == 200, again.text
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert api.post("/v1/rankings", {"product_ids": ["B"]}, headers=key).status_code == 409


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"product_ids": ["A"], "return_weight": True}, "return_weight"),
        ({"product_ids": ["A"], "return_weight": "1"}, "return_weight"),
        ({"product_ids": ["A"], "scores": {"A": "0.5"}}, "scores.A"),
    ],
)
def test_a_wrong_type_is_named_by_its_field_alone(
    api: Api, body: dict[str, Any], path: str
) -> None:
    # Not `return_weight.float` and `return_weight.int`: one detail naming the field.
    response = api.post("/v1/rankings", body)
    assert response.status_code == 422, response.text
    assert [detail["path"] for detail in response.json()["error"]["details"]] == [path]


@pytest.mark.parametrize(
    ("params", "path"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 201}, "limit"),
        ({"sort": "price"}, "sort"),
        ({"min_units_sold": -1}, "min_units_sold"),
        ({"cursor": "not-a-cursor"}, "cursor"),
    ],
)
def test_bad_list_parameters_are_400(api: Api, params: dict[str, Any], path: str) -> None:
    response = api.get("/v1/products", params=params)
    assert response.status_code == 400, response.text
    assert path in [detail["path"] for detail in response.json()["error"]["details"]]


@pytest.mark.parametrize("value", [2**63, 2**64 - 1])
@pytest.mark.parametrize("sort", ["units_sold", "-return_rate"])
def test_a_cursor_holding_a_number_past_64_bits_is_400(api: Api, sort: str, value: int) -> None:
    # A hand-made cursor: SQLite cannot bind such an integer (it was a 500 there).
    cursor = base64.urlsafe_b64encode(json.dumps([sort, value, "x"]).encode()).decode()
    response = api.get("/v1/products", params={"sort": sort, "cursor": cursor})
    assert response.status_code == 400, response.text
    assert [detail["path"] for detail in response.json()["error"]["details"]] == ["cursor"]


def test_empty_query_parameters_are_absent_ones(api: Api) -> None:
    """API.md 6 writes the list as `?sort=-return_rate&category=&min_units_sold=`: a
    parameter sent empty (as forms and URL templates send them) means "not given"."""
    ids = shop(api)
    response = api.get("/v1/products?sort=-return_rate&category=&min_units_sold=&cursor=")
    assert response.status_code == 200, response.text
    assert {row["product_id"] for row in response.json()["data"]} >= set(ids.values())


def test_a_cursor_of_another_sort_is_refused(api: Api) -> None:
    shop(api)
    page = api.get("/v1/products", params={"limit": 1, "sort": "units_sold"}).json()
    response = api.get(
        "/v1/products", params={"limit": 1, "sort": "-return_rate", "cursor": page["next_cursor"]}
    )
    assert response.status_code == 400


def test_only_a_secret_key_reads_product_signals(client: TestClient, tenant: TenantFixture) -> None:
    for method, path, body in [
        ("GET", "/v1/products/SKU-1/stats", None),
        ("GET", "/v1/products", None),
        ("POST", "/v1/rankings", {"product_ids": ["SKU-1"]}),
        ("GET", "/v1/reports/returns?group_by=reason", None),
    ]:
        assert client.request(method, path, json=body).status_code == 401
        response = client.request(method, path, json=body, headers=tenant.publishable_headers)
        assert response.status_code == 403, (path, response.text)


def test_tenants_never_see_each_others_products(
    client: TestClient, tenant: TenantFixture, other_tenant: TenantFixture
) -> None:
    mine, theirs = Api(client, tenant), Api(client, other_tenant)
    ids = shop(mine)
    stats(theirs, ids["A"], expect=404)
    assert theirs.get("/v1/products").json()["data"] == []
    ranking = rank(theirs, {"product_ids": [ids["B"]]})["ranking"]
    assert ranking[0]["known"] is False
    assert ranking[0]["prior_rate"] == 0.0  # the other tenant has sold nothing
    report = theirs.get("/v1/reports/returns", params={"group_by": "product"}).json()
    assert report["data"] == []


def test_erasing_a_customer_keeps_product_signals(api: Api) -> None:
    product = unique("SKU")
    customer = person()
    order = api.buy(line("1", product_id=product, quantity=2), customer=customer)
    api.record_return(order, {"product_id": product, "quantity": 1, "reason": "unwanted"})
    before = stats(api, product)
    assert api.delete(f"/v1/customers/{customer['id']}").status_code == 204
    assert stats(api, product) == before


def test_rebuild_reports_and_repairs_drifted_signals(
    api: Api, database: DatabaseFixture, tenant: TenantFixture, tmp_path: Path
) -> None:
    ids = shop(api)
    with database.db.transaction() as session:
        session.execute(
            text(
                "UPDATE product_signals SET units_sold = 7 WHERE tenant_id = :t AND product_id = :p"
            ),
            {"t": tenant.id, "p": ids["A"]},
        )
        session.execute(
            text("DELETE FROM category_signals WHERE tenant_id = :t AND path = 'Home'"),
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
    products = checked.json()["tenants"][0]["products"]
    assert products["differences"] == 2
    tables = {example["table"]: example for example in products["examples"]}
    assert tables["product_signals"]["kept"][2] == 7
    assert tables["product_signals"]["rebuilt"][2] == 100
    assert tables["category_signals"] == {
        "table": "category_signals",
        "key": ["Home"],
        "kept": None,
        "rebuilt": [50, 5],
    }
    assert stats(api, ids["A"])["units_sold"] == 7  # only checked
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
    assert repaired.json()["tenants"][0]["products"]["written"] is True
    assert stats(api, ids["A"])["units_sold"] == 100
    check_rebuild(database, tenant)


def test_reported_events_count_and_show_as_reported(api: ProductsApi) -> None:
    product = unique("SKU")
    api.buy(line("1", product_id=product, quantity=3, category="Apparel/Tops"))
    # A storefront reports 2 more sold (naming another category, which is ignored: a public
    # key must not move products) and 1 returned as defective with 400 refunded.
    when = "2026-11-20T10:00:00Z"
    report_events(
        api.http,
        api.tenant,
        [
            {
                "type": "purchase",
                "id": unique("rp"),
                "timestamp": when,
                "channel": "online",
                "currency": "EUR",
                "items": [{"product_id": product, "quantity": 2, "category": "Evil/Elsewhere"}],
            },
            {
                "type": "return",
                "id": unique("rr"),
                "timestamp": when,
                "channel": "online",
                "currency": "EUR",
                "refund": 400,
                "items": [{"product_id": product, "quantity": 1, "reason": "defective"}],
            },
        ],
    )
    body = stats(api, product)
    # 3 verified + 2 reported sold; 1 reported back: rate 1/5.
    assert (body["units_sold"], body["units_returned"], body["return_rate"]) == (5, 1, 0.2)
    assert body["reported"] == {"units_sold": 2, "units_returned": 1, "refunded": {"EUR": 400}}
    assert body["refunded"] == {"EUR": 400}
    assert body["reasons"] == {"defective": 1}
    assert body["category"] == "Apparel/Tops"
    report = api.get(
        "/v1/reports/returns",
        params={"group_by": "product", "from": "2026-11-20", "to": "2026-11-21"},
    ).json()["data"]
    assert report == [
        {
            "group": product,
            "returns": 1,
            "units_returned": 1,
            "refunded": 400,
            "units_sold": 2,
            "return_rate": 0.5,
        }
    ]
    check_rebuild(api.database, api.tenant)


def test_stats_and_rankings_have_exactly_the_fields_of_their_models(api: Api) -> None:
    """Both are rendered with orjson, past the response models: their rows must still be
    what the models (and the OpenAPI document) say, no field more or less."""
    ids = shop(api)
    body = stats(api, ids["A"])
    assert set(body) == set(ProductStats.model_fields)
    assert ProductStats.model_validate(body).model_dump(mode="json") == body
    ranked = rank(api, {"product_ids": [ids["B"], "never-seen"], "scores": {ids["B"]: 2}})
    assert Ranking.model_validate(ranked).model_dump(mode="json") == ranked
    assert all(set(row) == set(RankedProduct.model_fields) for row in ranked["ranking"])
