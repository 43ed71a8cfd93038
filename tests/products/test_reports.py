"""GET /v1/reports/returns (API.md 6 and 11): groups, date ranges, currency, CSV; every
figure worked out by hand in the comments."""

import csv
import io
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from returnstack.products import service as products
from returnstack.products.repository import GROUPS
from tests.conftest import DatabaseFixture, TenantFixture
from tests.factories import purchase, return_event, unique
from tests.products.helpers import report_events
from tests.returns.helpers import Api, line, person

OCTOBER = {"from": "2026-10-01", "to": "2026-11-01"}


@pytest.fixture
def api(client: TestClient, tenant: TenantFixture) -> Api:
    return Api(client, tenant)


def october(api: Api) -> dict[str, str]:
    """Facts of the worked examples (EUR unless said):

    o1 2026-10-05 online          P1 x4 (Apparel/Tops), P2 x2 (Home)
    o2 2026-10-12 offline, S1     P1 x2
    r1 2026-10-06 online, o1      P1 x1 size_too_small, P2 x1 defective; refund 1500
                                  (items without prices: spread by units, 750 each)
    r2 2026-10-13 offline, S1     P1 x2 size_too_small; no refund
    not counted: a USD order of P1 x10 on 2026-10-07, and an order of P1 x5 on 2026-09-01.
    """
    p1, p2, s1 = unique("P1"), unique("P2"), unique("S1")
    customer = person()
    o1 = purchase(
        customer=customer,
        timestamp="2026-10-05T10:00:00Z",
        items=[
            line("1", product_id=p1, quantity=4, unit_price=1000, category="Apparel/Tops"),
            line("2", product_id=p2, quantity=2, unit_price=500, category="Home"),
        ],
    )
    o2 = purchase(
        customer=customer,
        timestamp="2026-10-12T09:00:00Z",
        channel="offline",
        store={"id": s1},
        items=[line("1", product_id=p1, quantity=2, unit_price=1000, category="Apparel/Tops")],
    )
    usd = purchase(
        timestamp="2026-10-07T09:00:00Z",
        currency="USD",
        items=[line("1", product_id=p1, quantity=10, category="Apparel/Tops")],
    )
    september = purchase(
        timestamp="2026-09-01T09:00:00Z",
        items=[line("1", product_id=p1, quantity=5, category="Apparel/Tops")],
    )
    r1 = return_event(
        customer=customer,
        order_id=o1["order_id"],
        timestamp="2026-10-06T12:00:00Z",
        items=[
            {"product_id": p1, "quantity": 1, "reason": "size_too_small"},
            {"product_id": p2, "quantity": 1, "reason": "defective"},
        ],
        refund={"amount": 1500, "method": "original_payment"},
    )
    r2 = return_event(
        customer=customer,
        order_id=o2["order_id"],
        timestamp="2026-10-13T08:00:00Z",
        channel="offline",
        store={"id": s1},
        items=[{"product_id": p1, "quantity": 2, "reason": "size_too_small"}],
    )
    api.send(o1, o2, usd, september, r1, r2)
    return {"p1": p1, "p2": p2, "s1": s1}


def report(api: Api, group_by: str, **params: Any) -> list[dict[str, Any]]:
    response = api.get("/v1/reports/returns", params={"group_by": group_by, **OCTOBER, **params})
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()["data"]
    return rows


def row(group: Any, returns: int, back: int, refunded: int, sold: Any, rate: Any) -> dict:
    return {
        "group": group,
        "returns": returns,
        "units_returned": back,
        "refunded": refunded,
        "units_sold": sold,
        "return_rate": rate,
    }


def test_grouped_by_product_and_category(api: Api) -> None:
    ids = october(api)
    # P1: sold 4 + 2 = 6 in October (EUR); back 1 + 2 = 3 in 2 returns; refunded 750.
    # P2: sold 2; back 1 in 1 return; refunded 750.
    assert sorted(report(api, "product"), key=lambda r: r["group"] != ids["p1"]) == [
        row(ids["p1"], 2, 3, 750, 6, 0.5),
        row(ids["p2"], 1, 1, 750, 2, 0.5),
    ]
    assert report(api, "category") == [
        row("Apparel/Tops", 2, 3, 750, 6, 0.5),
        row("Home", 1, 1, 750, 2, 0.5),
    ]


def test_grouped_by_reason_has_no_sales(api: Api) -> None:
    october(api)
    # size_too_small: r1's P1 x1 and r2's P1 x2 (2 returns, 3 units), r1's P1 share 750;
    # defective: r1's P2 x1, share 750.
    assert report(api, "reason") == [
        row("defective", 1, 1, 750, None, None),
        row("size_too_small", 2, 3, 750, None, None),
    ]


def test_grouped_by_channel_and_store(api: Api) -> None:
    ids = october(api)
    # online: sold 4 + 2 (o1), r1 brought 2 back with 1500 refunded: rate 2/6.
    # offline: sold 2 (o2), r2 brought 2 back: rate 1.
    assert report(api, "channel") == [
        row("offline", 1, 2, 0, 2, 1.0),
        row("online", 1, 2, 1500, 6, 2 / 6),
    ]
    # Without a store last (group null).
    assert report(api, "store") == [
        row(ids["s1"], 1, 2, 0, 2, 1.0),
        row(None, 1, 2, 1500, 6, 2 / 6),
    ]


def test_grouped_by_day_week_and_month(api: Api) -> None:
    october(api)
    assert report(api, "day") == [
        row("2026-10-05", 0, 0, 0, 6, 0.0),
        row("2026-10-06", 1, 2, 1500, 0, 0.0),
        row("2026-10-12", 0, 0, 0, 2, 0.0),
        row("2026-10-13", 1, 2, 0, 0, 0.0),
    ]
    # 10-05 and 10-06 are Monday and Tuesday of ISO week 41; 10-12 and 10-13 of week 42.
    assert report(api, "week") == [
        row("2026-W41", 1, 2, 1500, 6, 2 / 6),
        row("2026-W42", 1, 2, 0, 2, 1.0),
    ]
    assert report(api, "month") == [row("2026-10", 2, 4, 1500, 8, 0.5)]


def test_a_line_added_to_a_known_order_counts_on_that_orders_day_currency_and_store(
    api: Api,
) -> None:
    """A later purchase event for a known order adds its new line with the order's time,
    currency, channel and store, not the later event's (reports read units sold from the
    lines, which carry their order's)."""
    ids = october(api)
    p3 = unique("P3")
    first = purchase(
        timestamp="2026-10-20T10:00:00Z",
        channel="offline",
        store={"id": ids["s1"]},
        items=[line("1", product_id=p3, quantity=1, category="Home")],
    )
    later = {
        **{key: value for key, value in first.items() if key != "store"},
        "id": unique("p"),
        "timestamp": "2026-11-03T10:00:00Z",  # after the range
        "channel": "online",
        "currency": "USD",
        "items": [line("2", product_id=p3, quantity=3, category="Home")],
    }
    api.send(first)
    api.send(later)
    assert report(api, "product", **{"from": "2026-10-20", "to": "2026-10-21"}) == [
        row(p3, 0, 0, 0, 4, 0.0)
    ]
    assert report(api, "store", **{"from": "2026-10-20", "to": "2026-10-21"}) == [
        row(ids["s1"], 0, 0, 0, 4, 0.0)
    ]
    assert report(api, "day", **{"from": "2026-11-01", "to": "2026-12-01"}) == []
    assert report(api, "day", currency="USD", **{"from": "2026-11-01", "to": "2026-12-01"}) == []


def test_the_range_is_from_inclusive_to_exclusive_and_takes_timestamps(api: Api) -> None:
    october(api)
    # From o1's exact time (included) to r2's exact time (excluded): o1, r1 and o2.
    rows = report(api, "month", **{"from": "2026-10-05T10:00:00Z", "to": "2026-10-13T08:00:00Z"})
    assert rows == [row("2026-10", 1, 2, 1500, 8, 2 / 8)]
    # An offset is honoured: 2026-10-13T10:00+02:00 is 08:00Z, still excluded.
    rows = report(api, "month", **{"from": "2026-10-05", "to": "2026-10-13T10:00:00+02:00"})
    assert rows == [row("2026-10", 1, 2, 1500, 8, 2 / 8)]


def test_another_currency_has_its_own_report(api: Api) -> None:
    october(api)
    assert report(api, "month", currency="usd") == [row("2026-10", 0, 0, 0, 10, 0.0)]


def test_default_range_is_the_last_90_days(api: Api) -> None:
    product = unique("SKU")
    api.buy(line("1", product_id=product, quantity=3), days_ago=10)
    api.buy(line("1", product_id=product, quantity=100), days_ago=120)
    response = api.get("/v1/reports/returns", params={"group_by": "product"})
    assert response.json()["data"] == [row(product, 0, 0, 0, 3, 0.0)]


def test_csv_gives_the_same_rows_with_formulas_neutralised(api: Api) -> None:
    formula = "=HYPERLINK(1)"
    api.send(
        purchase(
            timestamp="2026-10-05T10:00:00Z", items=[line("1", product_id=formula, quantity=2)]
        )
    )
    october(api)
    csv_headers = api.tenant.headers | {"Accept": "text/csv"}
    response = api.http.get(
        "/v1/reports/returns", params={"group_by": "product", **OCTOBER}, headers=csv_headers
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0] == [
        "group",
        "returns",
        "units_returned",
        "refunded",
        "units_sold",
        "return_rate",
    ]
    assert ["'" + formula, "0", "0", "0", "2", "0.0"] in rows
    assert len(rows) == 1 + 3
    by_reason = api.http.get(
        "/v1/reports/returns", params={"group_by": "reason", **OCTOBER}, headers=csv_headers
    )
    assert list(csv.reader(io.StringIO(by_reason.text)))[1] == [
        "defective",
        "1",
        "1",
        "750",
        "",
        "",
    ]


@pytest.mark.parametrize(
    ("params", "path"),
    [
        ({"group_by": "colour"}, "group_by"),
        ({}, "group_by"),
        ({"group_by": "day", "from": "yesterday"}, "from"),
        ({"group_by": "day", "from": "2026-10-01T00:00:00"}, "from"),  # no offset
        ({"group_by": "day", "to": "2026-13-01"}, "to"),
        ({"group_by": "day", "from": "2026-10-02", "to": "2026-10-01"}, "to"),
        ({"group_by": "day", "currency": "EU"}, "currency"),
        ({"group_by": "day", "currency": "€€€"}, "currency"),
        # Moments past the calendar's ends once moved to UTC, or 90 days before its start.
        ({"group_by": "day", "from": "0001-01-01T00:00:00+01:00"}, "from"),
        ({"group_by": "day", "to": "9999-12-31T23:59:59-01:00"}, "to"),
        ({"group_by": "day", "to": "0001-01-01"}, "to"),
    ],
)
def test_bad_parameters_are_400_naming_them(api: Api, params: dict[str, Any], path: str) -> None:
    response = api.get("/v1/reports/returns", params=params)
    assert response.status_code == 400, response.text
    assert path in [detail["path"] for detail in response.json()["error"]["details"]]


def test_empty_range_and_currency_parameters_are_absent_ones(api: Api) -> None:
    """`?group_by=day&from=&to=&currency=` (API.md 6's template, filled in part) is the
    default report: the last 90 days in the tenant's currency."""
    october(api)
    empty = api.get("/v1/reports/returns?group_by=month&from=&to=&currency=")
    assert empty.status_code == 200, empty.text
    assert empty.json() == api.get("/v1/reports/returns", params={"group_by": "month"}).json()


def test_several_groupings_at_once_equal_one_report_per_grouping(
    api: Api, database: DatabaseFixture, tenant: TenantFixture
) -> None:
    """returns_reports over all groupings at once (the dashboard's Insights, reading the
    range once) gives exactly what it gives asked for one grouping (the API's report):
    verified and reported sales and returns, in and out of stores, refunds spread over items
    with and without prices."""
    ids = october(api)
    report_events(
        api.http,
        tenant,
        [
            {
                "type": "purchase",
                "id": unique("rp"),
                "timestamp": "2026-10-20T10:00:00Z",
                "channel": "offline",
                "store": ids["s1"],
                "currency": "EUR",
                "items": [{"product_id": ids["p2"], "quantity": 3}],
            },
            {
                "type": "return",
                "id": unique("rr"),
                "timestamp": "2026-10-21T10:00:00Z",
                "channel": "online",
                "currency": "EUR",
                "refund": 700,
                "items": [
                    {"product_id": ids["p2"], "quantity": 1},
                    {"product_id": ids["p1"], "quantity": 2, "reason": "defective"},
                ],
            },
        ],
    )
    start = datetime(2026, 10, 1, tzinfo=UTC)
    end = datetime(2026, 11, 1, tzinfo=UTC)
    with database.db.transaction(write=False) as session:
        every = products.returns_reports(
            session,
            tenant_id=tenant.id,
            group_bys=GROUPS,
            start=start,
            end=end,
            currency="EUR",
        )
        for group_by in GROUPS:
            one = products.returns_report(
                session,
                tenant_id=tenant.id,
                group_by=group_by,
                start=start,
                end=end,
                currency="EUR",
            )
            assert every[group_by] == one, group_by
            assert one, group_by
