"""Returns against a real server process (`returnstack serve` on the test database, SQLite
file or PostgreSQL): concurrent requests never over-claim an order line, concurrent
transitions on one return have exactly one winner, and a whole return told end to end."""

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import DatabaseFixture, TenantFixture
from tests.e2e import Server, admitted
from tests.factories import unique
from tests.returns.helpers import Api, line, outbox_types, person, wanted

pytestmark = pytest.mark.e2e

THREADS = 24


@pytest.fixture(scope="module")
def server(database: DatabaseFixture, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir: Path = tmp_path_factory.mktemp(f"returns-server-{database.backend}")
    with Server(database.url, workdir) as running:
        yield running


@pytest.fixture
def api(server: Server, tenant: TenantFixture) -> Iterator[Api]:
    with httpx.Client(base_url=server.url, timeout=60) as http:
        yield Api(http, tenant)


Call = Callable[[httpx.Client], httpx.Response]


def poster(path: str, body: Any, headers: dict[str, str] | None = None) -> Call:
    """A POST to run later on some client."""

    def call(http: httpx.Client) -> httpx.Response:
        return http.post(path, json=body, headers=headers)

    return call


def together(server: Server, tenant: TenantFixture, calls: list[Call]) -> list[httpx.Response]:
    """Run the calls at the same moment, each on its own connection; results in call order.

    A call refused 503 `overloaded` (nothing written: a stall of a busy machine can hold a
    burst past the admission limit) is retried after its Retry-After, as a client does."""
    barrier = threading.Barrier(len(calls))

    def run(call: Call) -> httpx.Response:
        with httpx.Client(base_url=server.url, headers=tenant.headers, timeout=120) as http:
            http.get("/healthz")  # connect before the start line
            barrier.wait(timeout=60)
            return admitted(lambda: call(http))

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(run, calls))


def _codes(response: httpx.Response) -> set[tuple[str, str]]:
    return {(d["path"], d.get("code", "")) for d in response.json()["error"]["details"]}


def test_concurrent_returns_claim_exactly_what_was_bought(
    server: Server, tenant: TenantFixture, api: Api, database: DatabaseFixture
) -> None:
    quantity = 5
    order = api.buy(line("1", quantity=quantity))
    body = {"items": [wanted(order)]}
    responses = together(server, tenant, [poster("/v1/returns", body)] * THREADS)
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {201: quantity, 422: THREADS - quantity}, [r.text for r in responses]
    for response in responses:
        if response.status_code == 422:
            assert _codes(response) == {("items[0]", "quantity_exceeds_returnable")}, response.text
    created = [r.json() for r in responses if r.status_code == 201]
    assert sorted(r["number"] for r in created) == [f"R-{n:06d}" for n in range(1, quantity + 1)]
    assert api.lines(order)["1"] == (quantity, quantity, 0, 0)
    assert len(api.list()) == quantity
    kinds = Counter(t for r in created for t in outbox_types(database, tenant.id, r["id"]))
    assert kinds == {"return.requested": quantity}


def test_concurrent_returns_over_two_orders_do_not_deadlock_or_over_claim(
    server: Server, tenant: TenantFixture, api: Api
) -> None:
    customer = person()
    first = api.buy(line("1", quantity=6), customer=customer)
    second = api.buy(line("1", quantity=3), customer=customer)
    forward = {"items": [wanted(first), wanted(second)]}
    backward = {"items": [wanted(second), wanted(first)]}
    calls = [poster("/v1/returns", body) for body in [forward, backward] * (THREADS // 2)]
    responses = together(server, tenant, calls)
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {201: 3, 422: THREADS - 3}, [r.text for r in responses]
    assert api.lines(first)["1"] == (6, 3, 0, 3)
    assert api.lines(second)["1"] == (3, 3, 0, 0)


@pytest.mark.parametrize("if_match", [None, '"1"'], ids=["no If-Match", "If-Match"])
def test_concurrent_transitions_have_one_winner(
    server: Server,
    tenant: TenantFixture,
    api: Api,
    database: DatabaseFixture,
    if_match: str | None,
) -> None:
    rounds = 6
    order = api.buy(line("1", quantity=rounds))
    headers = {"If-Match": if_match} if if_match else {}
    for _ in range(rounds):
        ret = api.open(wanted(order))
        url = f"/v1/returns/{ret['id']}"
        approve, decline = together(
            server,
            tenant,
            [
                poster(f"{url}/approve", {}, headers),
                poster(f"{url}/decline", {"reason": "other"}, headers),
            ],
        )
        codes = sorted([approve.status_code, decline.status_code])
        assert codes in ([200, 409], [200, 412]), (approve.text, decline.text)
        loser = approve if approve.status_code != 200 else decline
        expected_type = "invalid_transition" if loser.status_code == 409 else "precondition_failed"
        assert loser.json()["error"]["type"] == expected_type
        winner = "approved" if approve.status_code == 200 else "declined"
        after = api.read(ret)
        assert after["status"] == winner
        assert after["version"] == 2
        assert [h["action"] for h in after["history"]] == [
            "request",
            "approve" if winner == "approved" else "decline",
        ]
        assert outbox_types(database, tenant.id, ret["id"]) == [
            "return.requested",
            f"return.{winner}",
        ]


def test_concurrent_partial_receipts_add_up_without_losing_one(
    server: Server, tenant: TenantFixture, api: Api
) -> None:
    order = api.buy(line("1", quantity=4))
    ret = api.act(api.open(wanted(order, quantity=4)), "approve")
    url = f"/v1/returns/{ret['id']}/receive"
    receipt = {"items": [{"order_id": order["order_id"], "line_id": "1", "quantity": 1}]}
    responses = together(server, tenant, [poster(url, receipt)] * 6)
    assert Counter(r.status_code for r in responses) == {200: 4, 422: 2}, [
        r.text for r in responses
    ]
    after = api.read(ret)
    assert after["items"][0]["received_quantity"] == 4
    assert [h["action"] for h in after["history"]].count("receive") == 4
    assert after["version"] == 2 + 4
    assert api.lines(order)["1"] == (4, 4, 4, 0)


def test_a_return_over_two_orders_told_end_to_end(
    server: Server, tenant: TenantFixture, api: Api, database: DatabaseFixture
) -> None:
    api.set_policy(restocking_fee_percent=10)
    customer = person()
    jacket = api.buy(
        line("1", product_id="JACKET", quantity=2, unit_price=2500),
        line("2", product_id="SCARF", quantity=1, unit_price=1000),
        customer=customer,
        days_ago=5,
    )
    shoes = api.buy(line("1", product_id="SHOES", quantity=3, unit_price=1500), customer=customer)
    items = [
        wanted(jacket, quantity=2, reason="size_too_small"),
        wanted(shoes, line_id=None, product_id="SHOES", reason="defective", note="sole came off"),
    ]

    # What the customer would get back, before asking.
    preview = api.post("/v1/returns/preview", {"items": items})
    assert preview.status_code == 200, preview.text
    assert preview.json()["eligible"] is True
    assert preview.json()["total"] == 5000 - 500 + 1500  # no fee on the defective shoes

    ret = api.open(*items, customer={"id": customer["id"]}, external_id="ticket-1")
    assert (ret["status"], ret["source"], ret["customer"]) == ("requested", "api", customer)
    assert api.lines(jacket) == {"1": (2, 2, 0, 0), "2": (1, 0, 0, 1)}
    assert api.lines(shoes)["1"] == (3, 1, 0, 2)

    ret = api.act(ret, "approve", {"note": "label sent"}, headers={"If-Match": '"1"'})
    # One jacket and the shoes arrive; the second jacket never does.
    ret = api.act(
        ret,
        "receive",
        {
            "items": [
                {"order_id": jacket["order_id"], "line_id": "1", "quantity": 1},
                {"order_id": shoes["order_id"], "line_id": "1", "quantity": 1},
            ]
        },
    )
    assert [(i["received_quantity"], i["outcome"], i["disposition"]) for i in ret["items"]] == [
        (1, "received", "restock"),
        (1, "received", "restock"),
    ]
    assert api.lines(jacket)["1"] == (2, 2, 1, 0)
    assert api.lines(shoes)["1"] == (3, 1, 1, 2)

    ret = api.act(ret, "refund", {"method": "original_payment"})
    assert ret["refund"]["amount"] == 2500 - 250 + 1500
    assert ret["refund"]["currency"] == "EUR"
    ret = api.act(ret, "close", {"note": "done"})
    assert ret["status"] == "closed"
    assert ret["closed_at"] is not None

    final = api.read(ret["number"])
    assert final == ret
    assert [(h["action"], h["from"], h["to"]) for h in final["history"]] == [
        ("request", None, "requested"),
        ("approve", "requested", "approved"),
        ("receive", "approved", "received"),
        ("refund", "received", "refunded"),
        ("close", "refunded", "closed"),
    ]
    assert [h["note"] for h in final["history"]][1] == "label sent"
    assert final["version"] == 5
    assert [r["id"] for r in api.list(customer_id=customer["id"])] == [ret["id"]]
    assert [r["id"] for r in api.list(order_id=shoes["order_id"], status="closed")] == [ret["id"]]
    assert outbox_types(database, tenant.id, ret["id"]) == [
        "return.requested",
        "return.approved",
        "return.received",
        "return.refunded",
        "return.closed",
    ]
    # What stays claimed is what the return asked for; what came back is returned.
    assert api.lines(jacket) == {"1": (2, 2, 1, 0), "2": (1, 0, 0, 1)}
    assert api.lines(shoes)["1"] == (3, 1, 1, 2)


def test_items_of_one_optimove_return_sent_at_once_make_one_return(
    server: Server, tenant: TenantFixture, api: Api
) -> None:
    """Optimove sends one event per returned item; requests carrying items of one new return
    at the same moment still make one return, each product once (COMPAT.md)."""
    order_id, return_id, customer = unique("o"), unique("r"), unique("c")

    def item(product: str) -> dict[str, Any]:
        return {
            "tenant": 567,
            "timestamp": "2024-05-27 10:30:00.000000 UTC",
            "event": "ootb_product_return",
            "customer": customer,
            "context": {
                "ootb_return_id": return_id,
                "ootb_order_id": order_id,
                "ootb_product_id": product,
                "ootb_item_price": 25,
                "ootb_quantity": 1,
                "ootb_reason": "Item not as described",
            },
        }

    products = [f"SKU-{n}" for n in range(8)]
    # Each product twice, in different requests: the repeat is a duplicate.
    calls = [poster("/optimove/events", item(products[n % 8])) for n in range(16)]
    results = together(server, tenant, calls)
    assert all(response.status_code == 200 for response in results), [r.text for r in results]
    counts: Counter[str] = Counter()
    for response in results:
        counts.update(
            accepted=response.json()["accepted"], duplicates=response.json()["duplicates"]
        )
    assert (counts["accepted"], counts["duplicates"]) == (8, 8)
    (ret,) = api.get("/v1/returns", params={"order_id": order_id}).json()["data"]
    assert sorted(i["product_id"] for i in ret["items"]) == products
    assert ret["refund"]["amount"] == 8 * 2500
    totals = api.get(f"/v1/customers/{customer}").json()["totals"]["EUR"]
    assert (totals["returns"], totals["items_returned"], totals["refunded"]) == (1, 8, 20000)
