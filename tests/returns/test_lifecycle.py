"""The return lifecycle: every transition of the state machine (allowed and refused, from a
table), receiving, refunds and their money, claims on order lines, history, versions and
If-Match, PATCH and DELETE, and one outbox message per action (API.md 4, 7, 11)."""

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import DatabaseFixture, TenantFixture
from tests.returns.helpers import (
    HISTORY_KEYS,
    Api,
    error_codes,
    line,
    outbox_rows,
    outbox_types,
    person,
    wanted,
)


@pytest.fixture
def api(client: TestClient, tenant: TenantFixture) -> Api:
    return Api(client, tenant)


def receipt(order: dict[str, Any], line_id: str = "1", quantity: int = 1, **fields: Any) -> dict:
    return {"order_id": order["order_id"], "line_id": line_id, "quantity": quantity} | fields


# --- the state machine, from a table ------------------------------------------------------

# Where each action leads from each state; everything else is 409 invalid_transition.
ALLOWED: dict[str, dict[str, str]] = {
    "requested": {"approve": "approved", "decline": "declined", "cancel": "cancelled"},
    "approved": {"receive": "received", "cancel": "cancelled"},
    "declined": {"close": "closed"},
    "received": {"receive": "received", "refund": "refunded"},
    "refunded": {"close": "closed"},
    "closed": {"reopen": "requested"},
    "closed after decline": {"reopen": "requested"},
    "cancelled": {"reopen": "requested"},
    "recorded": {},  # closed, from an event: a fact from elsewhere, never reopened
}
STATUS_OF = {"closed after decline": "closed", "recorded": "closed"}
ACTIONS = ["approve", "decline", "receive", "refund", "close", "cancel", "reopen"]
EVENT_TYPE = {
    "approve": "return.approved",
    "decline": "return.declined",
    "receive": "return.received",
    "refund": "return.refunded",
    "close": "return.closed",
    "cancel": "return.cancelled",
    "reopen": "return.reopened",
}
# How to get a fresh return (2 units of line 1) into each state.
PATHS: dict[str, list[str]] = {
    "requested": [],
    "approved": ["approve"],
    "declined": ["decline"],
    "received": ["approve", "receive"],
    "refunded": ["approve", "receive", "refund"],
    "closed": ["approve", "receive", "refund", "close"],
    "closed after decline": ["decline", "close"],
    "cancelled": ["cancel"],
}


def body_for(action: str, order: dict[str, Any]) -> dict[str, Any]:
    bodies: dict[str, dict[str, Any]] = {
        "approve": {"note": "looks fine"},
        "decline": {"reason": "other", "note": "no receipt"},
        "receive": {"items": [receipt(order)]},
        "refund": {"method": "original_payment"},
        "close": {},
        "cancel": {"reason": "customer changed mind"},
        "reopen": {"note": "customer wrote again"},
    }
    return bodies[action]


def reach(api: Api, state: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A return in `state` and its order (2 units of line 1, 1 received where relevant)."""
    order = api.buy(line("1", quantity=2, unit_price=1000))
    if state == "recorded":
        api.record_return(
            order, {"product_id": order["items"][0]["product_id"], "quantity": 1, "reason": "color"}
        )
        [ret] = api.list(source="event")
        return ret, order
    ret = api.open(wanted(order, quantity=2))
    for action in PATHS[state]:
        ret = api.act(ret, action, body_for(action, order))
    assert ret["status"] == STATUS_OF.get(state, state)
    return ret, order


CASES = [(state, action) for state in ALLOWED for action in ACTIONS]


@pytest.mark.parametrize(("state", "action"), CASES, ids=[f"{s}-{a}" for s, a in CASES])
def test_transition_table(api: Api, database: DatabaseFixture, state: str, action: str) -> None:
    ret, order = reach(api, state)
    before_outbox = outbox_types(database, api.tenant.id, ret["id"])
    response = api.post(f"/v1/returns/{ret['id']}/{action}", body_for(action, order))
    target = ALLOWED[state].get(action)
    if target is None:
        assert response.status_code == 409, response.text
        error = response.json()["error"]
        assert error["type"] == "invalid_transition"
        assert error["current_status"] == STATUS_OF.get(state, state)
        assert set(error["allowed_actions"]) == set(ALLOWED[state])
        assert api.read(ret) == ret  # unchanged: same version, same history
        assert outbox_types(database, api.tenant.id, ret["id"]) == before_outbox
        return
    assert response.status_code == 200, response.text
    after = response.json()
    assert after["status"] == target
    assert after["version"] == ret["version"] + 1
    assert response.headers["etag"] == f'"{after["version"]}"'
    assert after["history"][:-1] == ret["history"]
    entry = after["history"][-1]
    assert set(entry) == HISTORY_KEYS
    assert (entry["action"], entry["from"], entry["to"]) == (action, ret["status"], target)
    assert entry["actor"] == f"api_key:{api.tenant.secret_key_id}"
    assert api.read(ret) == after
    # One outbox message, of the action's type, showing the return after the change.
    rows = outbox_rows(database, api.tenant.id, ret["id"])
    assert [row.type for row in rows] == [*before_outbox, EVENT_TYPE[action]]
    assert rows[-1].data["status"] == target
    assert rows[-1].data["version"] == after["version"]


def test_the_recorded_return_refuses_reopen_with_a_reason(api: Api) -> None:
    ret, _ = reach(api, "recorded")
    assert ret["source"] == "event"
    response = api.post(f"/v1/returns/{ret['id']}/reopen", {})
    assert response.status_code == 409
    assert response.json()["error"]["type"] == "invalid_transition"


def test_decline_needs_a_known_reason(api: Api) -> None:
    ret, _ = reach(api, "requested")
    for body in ({}, {"reason": "bored"}, None):
        response = api.post(f"/v1/returns/{ret['id']}/decline", body)
        assert response.status_code == 422, response.text
    for reason in ("final_sale", "return_period_ended", "other"):
        fresh, _ = reach(api, "requested")
        declined = api.act(fresh, "decline", {"reason": reason})
        assert declined["status"] == "declined"
        assert reason in (declined["history"][-1]["note"] or "")
    assert api.read(ret)["version"] == 1


def test_actions_accept_an_empty_body_where_nothing_is_required(
    api: Api, client: TestClient
) -> None:
    ret, _ = reach(api, "requested")
    response = client.post(f"/v1/returns/{ret['id']}/approve", headers=api.tenant.headers)
    assert response.status_code == 200, response.text
    response = client.post(f"/v1/returns/{ret['id']}/cancel", headers=api.tenant.headers)
    assert response.status_code == 200, response.text
    response = client.post(f"/v1/returns/{ret['id']}/reopen", headers=api.tenant.headers)
    assert response.status_code == 200, response.text


# --- receiving ----------------------------------------------------------------------------


def test_partial_receipts_add_up(api: Api) -> None:
    order = api.buy(line("1", quantity=3, unit_price=1000))
    ret = api.act(api.open(wanted(order, quantity=3)), "approve")
    ret = api.act(ret, "receive", {"items": [receipt(order, quantity=1)]})
    assert (ret["status"], ret["items"][0]["received_quantity"]) == ("received", 1)
    assert api.lines(order)["1"] == (3, 3, 1, 0)
    ret = api.act(ret, "receive", {"items": [receipt(order, quantity=2)]})
    assert ret["items"][0]["received_quantity"] == 3
    assert api.lines(order)["1"] == (3, 3, 3, 0)
    response = api.post(f"/v1/returns/{ret['id']}/receive", {"items": [receipt(order)]})
    assert response.status_code == 422, response.text
    assert api.read(ret) == ret


def test_receiving_more_than_requested_is_422(api: Api, database: DatabaseFixture) -> None:
    order = api.buy(line("1", quantity=3))
    ret = api.act(api.open(wanted(order, quantity=2)), "approve")
    response = api.post(f"/v1/returns/{ret['id']}/receive", {"items": [receipt(order, quantity=3)]})
    assert response.status_code == 422, response.text
    assert "items[0]" in response.json()["error"]["details"][0]["path"]
    assert api.read(ret) == ret
    assert outbox_types(database, api.tenant.id, ret["id"])[-1] == "return.approved"


def test_receiving_a_line_that_is_not_in_the_return_is_422(api: Api) -> None:
    order = api.buy(line("1", quantity=2), line("2"))
    ret = api.act(api.open(wanted(order)), "approve")
    for bad in (receipt(order, line_id="2"), {**receipt(order), "order_id": "elsewhere"}):
        response = api.post(f"/v1/returns/{ret['id']}/receive", {"items": [receipt(order), bad]})
        assert response.status_code == 422, response.text
        assert [d["path"] for d in response.json()["error"]["details"]] == ["items[1]"]
    assert api.read(ret) == ret  # all or nothing: the good receipt was not kept either


def test_receiving_items_of_two_orders(api: Api) -> None:
    customer = person()
    first = api.buy(line("1", quantity=2), customer=customer)
    second = api.buy(line("5", quantity=1), customer=customer)
    ret = api.open(wanted(first, quantity=2), wanted(second, line_id="5"))
    ret = api.act(ret, "approve")
    ret = api.act(
        ret, "receive", {"items": [receipt(first, quantity=2), receipt(second, line_id="5")]}
    )
    assert [i["received_quantity"] for i in ret["items"]] == [2, 1]
    assert api.lines(first)["1"] == (2, 2, 2, 0)
    assert api.lines(second)["5"] == (1, 1, 1, 0)


@pytest.mark.parametrize(
    ("outcome", "disposition", "expected"),
    [
        (None, None, ("received", "restock")),
        ("received", None, ("received", "restock")),
        ("received", "not_restocked", ("received", "not_restocked")),
        ("damaged", None, ("damaged", "not_restocked")),
        ("damaged", "restock", ("damaged", "restock")),
        ("wrong_item", None, ("wrong_item", "not_restocked")),
        ("lost_in_transit", None, ("lost_in_transit", "not_restocked")),
    ],
)
def test_outcomes_and_default_dispositions(
    api: Api, outcome: str | None, disposition: str | None, expected: tuple[str, str]
) -> None:
    order = api.buy()
    ret = api.act(api.open(wanted(order)), "approve")
    extra: dict[str, Any] = {
        k: v for k, v in (("outcome", outcome), ("disposition", disposition)) if v
    }
    ret = api.act(ret, "receive", {"items": [receipt(order, **extra)]})
    assert (ret["items"][0]["outcome"], ret["items"][0]["disposition"]) == expected


@pytest.mark.parametrize("field", [{"outcome": "stolen"}, {"disposition": "burn"}])
def test_unknown_outcome_or_disposition_is_422(api: Api, field: dict[str, str]) -> None:
    order = api.buy()
    ret = api.act(api.open(wanted(order)), "approve")
    response = api.post(f"/v1/returns/{ret['id']}/receive", {"items": [receipt(order) | field]})
    assert response.status_code == 422, response.text
    assert api.read(ret) == ret


def test_a_return_naming_one_line_twice_can_be_received_in_full(api: Api) -> None:
    # Two items on the same line (different reasons) are a valid return of 2 units.
    order = api.buy(line("1", quantity=2, unit_price=1000))
    ret = api.open(wanted(order), wanted(order, reason="color"))
    ret = api.act(ret, "approve")
    response = api.post(
        f"/v1/returns/{ret['id']}/receive", {"items": [receipt(order), receipt(order)]}
    )
    assert response.status_code == 200, response.text
    assert [i["received_quantity"] for i in response.json()["items"]] == [1, 1]
    assert api.lines(order)["1"] == (2, 2, 2, 0)


# --- refunds ------------------------------------------------------------------------------


REFUNDS: dict[str, tuple[dict[str, Any], str, list[tuple[str, str, int]], int]] = {
    "everything, no fees": ({}, "unwanted", [("1", "received", 2), ("2", "received", 2)], 7996),
    "part of it": ({}, "unwanted", [("1", "received", 1)], 1999),
    "15 % fee rounds down": (
        {"restocking_fee_percent": 15},
        "unwanted",
        [("1", "received", 1)],
        1699,
    ),
    "15 % fee on 3 units": (
        {"restocking_fee_percent": 15},
        "unwanted",
        [("1", "received", 2), ("2", "received", 1)],
        5097,  # floor(5997 - 899.55)
    ),
    "shipping fee": ({"return_shipping_fee": 500}, "unwanted", [("1", "received", 1)], 1499),
    "fee and shipping": (
        {"restocking_fee_percent": 15, "return_shipping_fee": 500},
        "unwanted",
        [("1", "received", 1)],
        1199,
    ),
    "merchant fault: no fees": (
        {"restocking_fee_percent": 15, "return_shipping_fee": 500},
        "defective",
        [("1", "received", 1)],
        1999,
    ),
    "damaged not refunded": ({}, "unwanted", [("1", "received", 1), ("2", "damaged", 2)], 1999),
    "damaged refunded by policy": (
        {"refund_damaged_items": True},
        "unwanted",
        [("1", "received", 1), ("2", "damaged", 2)],
        5997,
    ),
    "wrong item not refunded": (
        {"refund_damaged_items": True},
        "unwanted",
        [("1", "wrong_item", 2), ("2", "received", 1)],
        1999,
    ),
    "lost in transit not refunded": ({}, "unwanted", [("1", "lost_in_transit", 2)], 0),
}


@pytest.mark.parametrize("case", list(REFUNDS.values()), ids=list(REFUNDS))
def test_default_refund_amount(api: Api, case: Any) -> None:
    policy, reason, receipts, expected = case
    if policy:
        api.set_policy(**policy)
    order = api.buy(line("1", quantity=2, unit_price=1999), line("2", quantity=2, unit_price=1999))
    ret = api.open(
        wanted(order, quantity=2, reason=reason),
        wanted(order, line_id="2", quantity=2, reason=reason),
    )
    ret = api.act(ret, "approve")
    for line_id, outcome, quantity in receipts:
        ret = api.act(
            ret, "receive", {"items": [receipt(order, line_id, quantity, outcome=outcome)]}
        )
    refunded = api.act(ret, "refund", {"method": "original_payment"})
    assert refunded["status"] == "refunded"
    refund = refunded["refund"]
    assert (refund["amount"], refund["currency"], refund["method"]) == (
        expected,
        "EUR",
        "original_payment",
    )
    assert refund["refunded_at"]
    # Nothing more than the default may be refunded; a little less is fine (tested below).


@pytest.mark.parametrize(
    ("receipts", "expected"),
    [
        ([("received", 1), ("damaged", 1)], 1999),
        ([("damaged", 1), ("received", 1)], 1999),
    ],
    ids=["received then damaged", "damaged then received"],
)
def test_one_line_received_in_parts_with_different_outcomes(
    api: Api, receipts: list[tuple[str, int]], expected: int
) -> None:
    """Only the unit received intact is refunded (damaged items are not, by default),
    whatever order the two receipts came in."""
    order = api.buy(line("1", quantity=2, unit_price=1999))
    ret = api.act(api.open(wanted(order, quantity=2)), "approve")
    for outcome, quantity in receipts:
        ret = api.act(
            ret, "receive", {"items": [receipt(order, quantity=quantity, outcome=outcome)]}
        )
    refunded = api.act(ret, "refund", {"method": "original_payment"})
    assert refunded["refund"]["amount"] == expected


def test_an_explicit_amount_may_be_lower_never_higher(api: Api, database: DatabaseFixture) -> None:
    api.set_policy(restocking_fee_percent=15)
    order = api.buy(line("1", quantity=2, unit_price=1999))
    ret = api.act(api.open(wanted(order, quantity=2)), "approve")
    ret = api.act(ret, "receive", {"items": [receipt(order)]})
    for amount in (1700, 1999, 3998):
        response = api.post(
            f"/v1/returns/{ret['id']}/refund", {"amount": amount, "method": "store_credit"}
        )
        assert response.status_code == 422, response.text
        assert response.json()["error"]["details"][0]["path"] == "amount"
    assert api.read(ret) == ret
    assert outbox_types(database, api.tenant.id, ret["id"])[-1] == "return.received"
    refunded = api.act(ret, "refund", {"amount": 1699, "method": "store_credit"})
    assert refunded["refund"]["amount"] == 1699
    assert refunded["refund"]["method"] == "store_credit"
    other = api.buy(line("1", unit_price=1999))
    ret = api.act(api.open(wanted(other)), "approve")
    ret = api.act(ret, "receive", {"items": [receipt(other)]})
    lower = api.act(ret, "refund", {"amount": 0, "method": "gift_card"})
    assert (lower["refund"]["amount"], lower["refund"]["method"]) == (0, "gift_card")


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"method": "bitcoin"},
        {"method": "cash", "amount": -1},
        {"method": "cash", "amount": "5"},
    ],
)
def test_malformed_refunds_are_422(api: Api, body: dict[str, Any]) -> None:
    ret, _ = reach(api, "received")
    response = api.post(f"/v1/returns/{ret['id']}/refund", body)
    assert response.status_code == 422, response.text
    assert api.read(ret) == ret


def test_a_reopened_refunded_return_never_refunds_the_same_units_twice(
    api: Api, database: DatabaseFixture
) -> None:
    order = api.buy(line("1", quantity=2, unit_price=1000))
    ret = api.act(api.open(wanted(order, quantity=2)), "approve")
    ret = api.act(ret, "receive", {"items": [receipt(order)]})
    ret = api.act(ret, "refund", {"method": "cash"})
    assert ret["refund"]["amount"] == 1000
    ret = api.act(api.act(ret, "close"), "reopen", {"note": "second parcel arrived"})
    ret = api.act(ret, "approve")
    ret = api.act(ret, "receive", {"items": [receipt(order)]})
    ret = api.act(ret, "refund", {"method": "cash"})
    # The return's refund is what was refunded in all; each return.refunded message says
    # what it adds in `changes.refund` [before, after]: together they must not pay more
    # than the 2 units (2000) that came back.
    assert ret["refund"]["amount"] == 2000
    paid = []
    for row in outbox_rows(database, api.tenant.id, ret["id"]):
        if row.type == "return.refunded":
            assert row.changes is not None
            before, after = row.changes["refund"]
            paid.append(after["amount"] - (before["amount"] if before else 0))
    assert paid == [1000, 1000]


def test_close_sets_closed_at(api: Api) -> None:
    ret, _ = reach(api, "refunded")
    assert ret["closed_at"] is None
    closed = api.act(ret, "close")
    assert closed["closed_at"] is not None
    assert closed["refund"] == ret["refund"]
    reopened = api.act(closed, "reopen")
    assert reopened["closed_at"] is None


# --- claims on order lines ----------------------------------------------------------------


@pytest.mark.parametrize("ending", [["decline"], ["cancel"], ["approve", "cancel"]])
def test_declined_or_cancelled_returns_release_their_claim(api: Api, ending: list[str]) -> None:
    order = api.buy(line("1", quantity=2))
    ret = api.open(wanted(order, quantity=2))
    assert api.lines(order)["1"] == (2, 2, 0, 0)
    for action in ending:
        ret = api.act(ret, action, body_for(action, order))
    assert api.lines(order)["1"] == (2, 0, 0, 2)
    api.open(wanted(order, quantity=2))  # the units can be claimed again
    assert api.lines(order)["1"] == (2, 2, 0, 0)


def test_a_declined_then_closed_return_still_claims_nothing(api: Api) -> None:
    order = api.buy(line("1", quantity=2))
    ret = api.act(api.open(wanted(order, quantity=2)), "decline", {"reason": "final_sale"})
    ret = api.act(ret, "close")
    assert ret["status"] == "closed"
    assert api.lines(order)["1"] == (2, 0, 0, 2)


def test_reopening_claims_again(api: Api) -> None:
    order = api.buy(line("1", quantity=3))
    ret = api.act(api.open(wanted(order, quantity=2)), "cancel")
    assert api.returnable(order) == 3
    ret = api.act(ret, "reopen", {"note": "found the parcel"})
    assert ret["status"] == "requested"
    assert api.lines(order)["1"] == (3, 2, 0, 1)
    declined = api.act(api.open(wanted(order)), "decline", {"reason": "other"})
    declined = api.act(api.act(declined, "close"), "reopen")
    assert declined["status"] == "requested"
    assert api.lines(order)["1"] == (3, 3, 0, 0)


def test_reopening_never_over_claims_a_line(api: Api) -> None:
    order = api.buy(line("1", quantity=1))
    first = api.act(api.open(wanted(order)), "cancel")
    api.open(wanted(order))  # takes the unit
    response = api.post(f"/v1/returns/{first['id']}/reopen", {})
    assert response.status_code in (409, 422), response.text
    assert api.read(first)["status"] == "cancelled"
    assert api.lines(order)["1"] == (1, 1, 0, 0)


def test_received_units_are_returned_quantity(api: Api) -> None:
    order = api.buy(line("1", quantity=3))
    ret = api.act(api.open(wanted(order, quantity=2)), "approve")
    assert api.lines(order)["1"] == (3, 2, 0, 1)
    ret = api.act(ret, "receive", {"items": [receipt(order)]})
    assert api.lines(order)["1"] == (3, 2, 1, 1)
    ret = api.act(ret, "refund", {"method": "cash"})
    ret = api.act(ret, "close")
    assert api.lines(order)["1"] == (3, 2, 1, 1)


# --- history, versions, If-Match ----------------------------------------------------------


def test_history_has_one_entry_per_action_with_actor_and_note(api: Api) -> None:
    order = api.buy(line("1", quantity=2))
    ret = api.open(wanted(order, quantity=2), note="opened by phone")
    steps: list[tuple[str, dict[str, Any]]] = [
        ("approve", {"note": "ok by Ann"}),
        ("receive", {"items": [receipt(order)], "note": "first box"}),
        ("receive", {"items": [receipt(order)]}),
        ("refund", {"method": "cash", "note": "paid at desk"}),
        ("close", {}),
        ("reopen", {"note": "customer wrote again"}),
    ]
    for action, body in steps:
        ret = api.act(ret, action, body)
    history = ret["history"]
    assert [(h["action"], h["from"], h["to"]) for h in history] == [
        ("request", None, "requested"),
        ("approve", "requested", "approved"),
        ("receive", "approved", "received"),
        ("receive", "received", "received"),
        ("refund", "received", "refunded"),
        ("close", "refunded", "closed"),
        ("reopen", "closed", "requested"),
    ]
    assert [h["note"] for h in history] == [
        "opened by phone",
        "ok by Ann",
        "first box",
        None,
        "paid at desk",
        None,
        "customer wrote again",
    ]
    assert {h["actor"] for h in history} == {f"api_key:{api.tenant.secret_key_id}"}
    assert [h["at"] for h in history] == sorted(h["at"] for h in history)
    assert ret["version"] == len(history)


def test_if_match_stale_is_412_current_is_200(api: Api, database: DatabaseFixture) -> None:
    ret, _ = reach(api, "requested")
    stale = {"If-Match": '"0"'}
    for method, path, body in (
        ("POST", "approve", {}),
        ("PATCH", "", {"note": "x"}),
        ("DELETE", "", None),
    ):
        url = f"/v1/returns/{ret['id']}" + (f"/{path}" if path else "")
        response = api.http.request(method, url, json=body, headers=api.tenant.headers | stale)
        assert response.status_code == 412, response.text
        assert response.json()["error"]["type"] == "precondition_failed"
        assert response.json()["error"]["current_version"] == 1
    assert api.read(ret) == ret
    assert outbox_types(database, api.tenant.id, ret["id"]) == ["return.requested"]
    approved = api.act(ret, "approve", headers={"If-Match": '"1"'})
    assert approved["version"] == 2
    api.act(approved, "cancel", headers={"If-Match": '"1"'}, expect=412)
    patched = api.patch(f"/v1/returns/{ret['id']}", {"note": "n"}, {"If-Match": '"2"'})
    assert patched.status_code == 409  # current version, but past requested
    cancelled = api.act(approved, "cancel", headers={"If-Match": '"2"'})
    assert cancelled["version"] == 3


def test_a_malformed_if_match_is_400(api: Api) -> None:
    ret, _ = reach(api, "requested")
    response = api.post(f"/v1/returns/{ret['id']}/approve", {}, {"If-Match": "yesterday"})
    assert response.status_code == 400, response.text
    assert api.read(ret) == ret


def test_the_etag_follows_the_version(api: Api) -> None:
    ret, _ = reach(api, "approved")
    response = api.get(f"/v1/returns/{ret['id']}")
    assert response.headers["etag"] == '"2"'
    response = api.post(
        f"/v1/returns/{ret['id']}/cancel", {}, {"If-Match": response.headers["etag"]}
    )
    assert response.status_code == 200, response.text
    assert response.headers["etag"] == '"3"'


# --- PATCH --------------------------------------------------------------------------------


def test_patch_edits_a_requested_return(api: Api, database: DatabaseFixture) -> None:
    order = api.buy(line("1", quantity=2), line("2", quantity=1, unit_price=500))
    ret = api.open(wanted(order, quantity=2))
    response = api.patch(
        f"/v1/returns/{ret['id']}",
        {
            "items": [wanted(order, quantity=1, reason="color"), wanted(order, line_id="2")],
            "note": "customer called back",
            "external_id": "zd-1",
            "metadata": {"ticket": "1"},
        },
    )
    assert response.status_code == 200, response.text
    patched = response.json()
    assert patched["status"] == "requested"
    assert patched["version"] == 2
    assert response.headers["etag"] == '"2"'
    assert [(i["line_id"], i["quantity"], i["reason"]) for i in patched["items"]] == [
        ("1", 1, "color"),
        ("2", 1, "unwanted"),
    ]
    assert (patched["note"], patched["external_id"], patched["metadata"]) == (
        "customer called back",
        "zd-1",
        {"ticket": "1"},
    )
    assert patched["history"][-1]["action"] == "update"
    assert len(patched["history"]) == 2
    assert api.lines(order) == {"1": (2, 1, 0, 1), "2": (1, 1, 0, 0)}
    assert outbox_types(database, api.tenant.id, ret["id"]) == [
        "return.requested",
        "return.updated",
    ]


def test_patch_checks_eligibility_again_without_counting_its_own_claim(api: Api) -> None:
    order = api.buy(line("1", quantity=3))
    ret = api.open(wanted(order, quantity=2))
    api.open(wanted(order, quantity=1))  # another return holds the third unit
    # Its own 2 units are free for itself: asking for them again is fine.
    ok = api.patch(
        f"/v1/returns/{ret['id']}", {"items": [wanted(order, quantity=2, reason="style")]}
    )
    assert ok.status_code == 200, ok.text
    too_many = api.patch(f"/v1/returns/{ret['id']}", {"items": [wanted(order, quantity=3)]})
    assert error_codes(too_many) == {("items[0]", "quantity_exceeds_returnable")}
    bad_reason = api.patch(f"/v1/returns/{ret['id']}", {"items": [wanted(order, reason="meh")]})
    assert error_codes(bad_reason) == {("items[0]", "unknown_reason")}
    stranger = api.buy()
    not_owned = api.patch(f"/v1/returns/{ret['id']}", {"items": [wanted(stranger)]})
    assert error_codes(not_owned) == {("items[0]", "order_not_owned")}
    after = api.read(ret)
    assert after["version"] == 2
    assert [(i["quantity"], i["reason"]) for i in after["items"]] == [(2, "style")]
    assert api.lines(order)["1"] == (3, 3, 0, 0)


def test_patch_cannot_switch_currency(api: Api) -> None:
    customer = person()
    euros = api.buy(customer=customer)
    dollars = api.buy(customer=customer, currency="USD")
    ret = api.open(wanted(euros))
    response = api.patch(f"/v1/returns/{ret['id']}", {"items": [wanted(dollars)]})
    assert response.status_code == 422, response.text
    assert "currency_mismatch" in {d.get("code") for d in response.json()["error"]["details"]}
    assert api.read(ret) == ret


@pytest.mark.parametrize("state", ["approved", "declined", "received", "cancelled", "recorded"])
def test_patch_past_requested_is_409(api: Api, state: str) -> None:
    ret, _ = reach(api, state)
    response = api.patch(f"/v1/returns/{ret['id']}", {"note": "too late"})
    assert response.status_code == 409, response.text
    assert response.json()["error"]["type"] == "invalid_transition"
    assert api.read(ret) == ret


# --- DELETE -------------------------------------------------------------------------------

DELETES = {
    "requested": "cancelled",
    "approved": "cancelled",
    "declined": "closed",
    "refunded": "closed",
    "received": None,
    "closed": None,
    "cancelled": None,
    "recorded": None,
}


@pytest.mark.parametrize(("state", "expected"), list(DELETES.items()), ids=list(DELETES))
def test_delete_cancels_or_closes_and_never_erases(
    api: Api, database: DatabaseFixture, state: str, expected: str | None
) -> None:
    ret, _ = reach(api, state)
    response = api.delete(f"/v1/returns/{ret['id']}")
    if expected is None:
        assert response.status_code == 409, response.text
        assert response.json()["error"]["type"] == "invalid_transition"
        assert api.read(ret) == ret
        return
    assert response.status_code == 200, response.text
    deleted = response.json()
    assert deleted["status"] == expected
    assert deleted["version"] == ret["version"] + 1
    assert api.read(ret) == deleted  # still there
    kind = "return.cancelled" if expected == "cancelled" else "return.closed"
    assert outbox_types(database, api.tenant.id, ret["id"])[-1] == kind


def test_get_by_id_and_by_number(api: Api) -> None:
    first, _ = reach(api, "approved")
    second, _ = reach(api, "requested")
    assert api.read(first["number"]) == api.read(first["id"])
    assert api.read("R-000002")["id"] == second["id"]
    assert api.read("r-2")["id"] == second["id"]  # any case, any padding


def test_idempotency_key_replays_an_action_instead_of_doing_it_again(api: Api) -> None:
    order = api.buy(line("1", quantity=3))
    ret = api.act(api.open(wanted(order, quantity=3)), "approve")
    key = {"Idempotency-Key": "receive-box-1"}
    body = {"items": [receipt(order)]}
    first = api.post(f"/v1/returns/{ret['id']}/receive", body, key)
    again = api.post(f"/v1/returns/{ret['id']}/receive", body, key)  # a client's retry
    assert first.status_code == again.status_code == 200, again.text
    assert again.json() == first.json()
    after = api.read(ret)
    assert after["items"][0]["received_quantity"] == 1, "the retried receipt was counted twice"
    assert after["version"] == 3
    approve_key = {"Idempotency-Key": "approve-1"}
    other = api.open(wanted(api.buy()))
    assert api.post(f"/v1/returns/{other['id']}/approve", {}, approve_key).status_code == 200
    replay = api.post(f"/v1/returns/{other['id']}/approve", {}, approve_key)
    assert replay.status_code == 200, replay.text


# --- the outbox ---------------------------------------------------------------------------


def test_every_action_writes_exactly_one_outbox_message(
    api: Api, database: DatabaseFixture
) -> None:
    order = api.buy(line("1", quantity=2, unit_price=1000))
    ret = api.open(wanted(order, quantity=2))
    api.patch(f"/v1/returns/{ret['id']}", {"note": "edited"})
    for action in ("approve", "receive", "refund", "close", "reopen", "decline"):
        api.act(ret, action, body_for(action, order))
    rows = outbox_rows(database, api.tenant.id, ret["id"])
    assert [row.type for row in rows] == [
        "return.requested",
        "return.updated",
        "return.approved",
        "return.received",
        "return.refunded",
        "return.closed",
        "return.reopened",
        "return.declined",
    ]
    assert [row.data["version"] for row in rows] == list(range(1, 9))
    assert rows[4].data["refund"]["amount"] == 1000  # one unit received at 1000


def test_a_refused_action_writes_no_outbox_message(api: Api, database: DatabaseFixture) -> None:
    ret, order = reach(api, "approved")
    before = outbox_types(database, api.tenant.id, ret["id"])
    api.act(ret, "receive", {"items": [receipt(order, quantity=5)]}, expect=422)
    api.act(ret, "refund", {"method": "cash"}, expect=409)
    api.act(ret, "approve", headers={"If-Match": '"9"'}, expect=412)
    assert outbox_types(database, api.tenant.id, ret["id"]) == before


def test_what_an_action_answers_is_the_stored_return(api: Api, database: DatabaseFixture) -> None:
    """Actions render the return as they wrote it, without reading it back: each answer
    is what GET, the list and the action's outbox message show of it afterwards."""
    store = {"id": "store-answers", "name": "Mitte", "city": "Berlin", "country": "DE"}
    order = api.buy(
        line("1", quantity=2, unit_price=1000),
        line("2", quantity=1, unit_price=450),
        channel="offline",
        store=store,
    )
    ret = api.open(
        wanted(order, quantity=2),
        wanted(order, line_id="2", note="scratched"),
        channel="offline",
        store={"id": store["id"]},
        metadata={"ticket": "T-1"},
    )
    steps: list[tuple[str, dict[str, Any]]] = [
        ("approve", {"note": "ok"}),
        ("receive", {"items": [receipt(order, quantity=1, outcome="damaged")]}),
        ("receive", {"items": [receipt(order), receipt(order, line_id="2")]}),
        ("refund", {"method": "store_credit"}),
        ("close", {}),
        ("reopen", {"note": "again"}),
    ]
    answers = [ret]
    for action, body in steps:
        response = api.post(f"/v1/returns/{ret['id']}/{action}", body)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert response.headers["etag"] == f'"{answer["version"]}"'
        assert api.read(ret) == answer
        assert api.list(store_id=store["id"]) == [answer]
        answers.append(answer)
    messages = outbox_rows(database, api.tenant.id, ret["id"])
    assert [message.data for message in messages] == answers
