"""GET/PUT /v1/policy: the settled defaults, validation that names the field, round trips,
and tenant isolation (API.md 4.2, 11). The policy's effect on returns is tested in
test_returns.py and test_returns_lifecycle.py."""

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import TenantFixture
from tests.returns.helpers import Api, error_codes, line, wanted

DEFAULT_REASONS = [
    ("size_too_small", False),
    ("size_too_large", False),
    ("color", False),
    ("style", False),
    ("unwanted", False),
    ("defective", True),
    ("damaged_in_transit", True),
    ("not_as_described", True),
    ("wrong_item", True),
    ("other", False),
]


@pytest.fixture
def api(client: TestClient, tenant: TenantFixture) -> Api:
    return Api(client, tenant)


def get_policy(api: Api) -> dict[str, Any]:
    response = api.get("/v1/policy")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_defaults(api: Api) -> None:
    policy = get_policy(api)
    assert policy["return_window_days"] == 30
    assert policy["refund_damaged_items"] is False
    assert policy["restocking_fee_percent"] == 0
    assert policy["return_shipping_fee"] == 0
    assert policy["rules"] == []
    assert policy["serial_returner"] == {"min_orders": 3, "return_rate_value": 0.5}
    assert [(r["code"], r["merchant_fault"]) for r in policy["reasons"]] == DEFAULT_REASONS
    assert all(isinstance(r["label"], str) and r["label"] for r in policy["reasons"])


FULL_POLICY: dict[str, Any] = {
    "return_window_days": 45,
    "refund_damaged_items": True,
    "restocking_fee_percent": 12.5,
    "return_shipping_fee": 495,
    "reasons": [
        {"code": "defective", "label": "Defective", "merchant_fault": True},
        {"code": "changed_mind", "label": "Changed my mind", "merchant_fault": False},
        {"code": "other", "label": "Other", "merchant_fault": False},
    ],
    "rules": [
        {"match": {"category_prefix": "Apparel/Underwear"}, "returnable": False},
        {
            "match": {"product_id": "SKU-9"},
            "return_window_days": 60,
            "restocking_fee_percent": 15,
        },
    ],
    "serial_returner": {"min_orders": 5, "return_rate_value": 0.4},
}


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def test_put_then_get_round_trips(api: Api) -> None:
    response = api.put("/v1/policy", FULL_POLICY)
    assert response.status_code == 200, response.text
    assert _without_nulls(response.json()) == FULL_POLICY
    assert _without_nulls(get_policy(api)) == FULL_POLICY
    # A second PUT replaces the whole document.
    api.set_policy(return_window_days=14)
    policy = get_policy(api)
    assert policy["return_window_days"] == 14
    assert policy["rules"] == []
    assert policy["restocking_fee_percent"] == 0
    assert [r["code"] for r in policy["reasons"]] == [code for code, _ in DEFAULT_REASONS]


def test_an_empty_put_restores_the_defaults(api: Api) -> None:
    defaults = get_policy(api)
    api.set_policy(**FULL_POLICY)
    response = api.put("/v1/policy", {})
    assert response.status_code == 200, response.text
    assert get_policy(api) == defaults


def test_the_policy_belongs_to_its_tenant(
    api: Api, client: TestClient, other_tenant: TenantFixture
) -> None:
    other = Api(client, other_tenant)
    defaults = get_policy(other)
    api.set_policy(**FULL_POLICY)
    assert get_policy(other) == defaults
    other.set_policy(return_window_days=7)
    assert get_policy(api)["return_window_days"] == 45
    # ...and each tenant's returns follow their own policy.
    order = api.buy(line("1", category="Apparel/Underwear"))
    response = api.post("/v1/returns", {"items": [wanted(order, reason="changed_mind")]})
    assert error_codes(response) == {("items[0]", "final_sale")}
    their_order = other.buy(line("1", category="Apparel/Underwear"))
    other.open(wanted(their_order))


INVALID: dict[str, tuple[dict[str, Any], str]] = {
    "percent above 100": ({"restocking_fee_percent": 101}, "restocking_fee_percent"),
    "negative percent": ({"restocking_fee_percent": -1}, "restocking_fee_percent"),
    "percent with 3 decimals": ({"restocking_fee_percent": 12.345}, "restocking_fee_percent"),
    "rule percent above 100": (
        {"rules": [{"match": {"product_id": "A"}, "restocking_fee_percent": 100.5}]},
        "rules[0].restocking_fee_percent",
    ),
    "rule percent with 3 decimals": (
        {"rules": [{"match": {"product_id": "A"}, "restocking_fee_percent": 0.001}]},
        "rules[0].restocking_fee_percent",
    ),
    "duplicate reason codes": (
        {
            "reasons": [
                {"code": "color", "label": "Color"},
                {"code": "style", "label": "Style"},
                {"code": "color", "label": "Colour"},
            ]
        },
        "reasons",
    ),
    "rule with both match keys": (
        {
            "rules": [
                {"match": {"product_id": "A"}, "returnable": False},
                {"match": {"product_id": "B", "category_prefix": "X"}, "returnable": False},
            ]
        },
        "rules[1].match",
    ),
    "rule with neither match key": (
        {"rules": [{"match": {}, "returnable": False}]},
        "rules[0].match",
    ),
    "negative window": ({"return_window_days": -1}, "return_window_days"),
    "window as text": ({"return_window_days": "thirty"}, "return_window_days"),
    "negative shipping fee": ({"return_shipping_fee": -5}, "return_shipping_fee"),
    "fractional shipping fee": ({"return_shipping_fee": 4.5}, "return_shipping_fee"),
    "no reasons": ({"reasons": []}, "reasons"),
    "bad reason code": ({"reasons": [{"code": "Has Spaces", "label": "x"}]}, "reasons[0].code"),
    "unknown field": ({"window": 30}, "window"),
    "serial returner rate above 1": (
        {"serial_returner": {"min_orders": 3, "return_rate_value": 1.5}},
        "serial_returner.return_rate_value",
    ),
}


@pytest.mark.parametrize(("body", "path"), list(INVALID.values()), ids=list(INVALID))
def test_invalid_policies_are_422_naming_the_field(
    api: Api, body: dict[str, Any], path: str
) -> None:
    before = get_policy(api)
    response = api.put("/v1/policy", body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["type"] == "validation_failed"
    assert path in [detail["path"] for detail in error["details"]], error["details"]
    assert get_policy(api) == before


def test_percent_with_two_decimals_is_accepted_and_used(api: Api) -> None:
    policy = api.set_policy(restocking_fee_percent=12.25)
    assert policy["restocking_fee_percent"] == 12.25
    order = api.buy(line("1", unit_price=1000))
    response = api.post("/v1/returns/preview", {"items": [wanted(order)]})
    assert response.status_code == 200, response.text
    assert response.json()["total"] == 877  # floor(1000 - 122.5)


def test_a_body_that_is_not_json_is_400(api: Api, client: TestClient) -> None:
    response = client.put(
        "/v1/policy",
        content=b"{not json",
        headers=api.tenant.headers | {"Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert get_policy(api)["return_window_days"] == 30
