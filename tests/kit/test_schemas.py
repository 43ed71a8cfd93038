"""kit.schemas.Schema, the base of every request body: unknown fields are refused and every
string, wherever it sits, refuses the NUL character with an error naming its exact path;
strings that their own parser checks keep the contract's answer (400 with the position of a
`where` expression, 401 for a customer token)."""

from typing import Annotated, Any

import pytest
from fastapi.testclient import TestClient
from pydantic import StringConstraints, ValidationError

from returnstack.kit.schemas import ParsedText, Schema
from tests.conftest import TenantFixture

NUL = "must not contain the NUL character (U+0000)"


class Inner(Schema):
    name: str
    tags: list[str] = []


class Outer(Schema):
    title: Annotated[str, StringConstraints(max_length=5)] = "t"
    maybe: str | None = None
    inner: list[Inner] = []
    labels: dict[str, str] = {}
    parsed: ParsedText = ""


def _errors(data: dict[str, Any]) -> list[tuple[tuple[Any, ...], str]]:
    with pytest.raises(ValidationError) as raised:
        Outer.model_validate(data)
    return [
        (error["loc"], error["msg"].removeprefix("Value error, "))
        for error in raised.value.errors()
    ]


@pytest.mark.parametrize(
    ("data", "loc"),
    [
        ({"title": "a\x00"}, ("title",)),
        ({"maybe": "\x00"}, ("maybe",)),
        ({"inner": [{"name": "n\x00"}]}, ("inner", 0, "name")),
        ({"inner": [{"name": "n", "tags": ["a", "b\x00"]}]}, ("inner", 0, "tags", 1)),
        ({"labels": {"k": "v\x00"}}, ("labels", "k")),
        ({"labels": {"k\x00": "v"}}, ("labels", "k\x00", "[key]")),
    ],
)
def test_a_nul_anywhere_is_refused_at_its_path(data: dict[str, Any], loc: tuple[Any, ...]) -> None:
    assert _errors(data) == [(loc, NUL)]


def test_the_fields_own_rules_come_first_and_unknown_fields_are_refused() -> None:
    assert [message for _, message in _errors({"title": "toolong\x00"})] == [
        "String should have at most 5 characters"
    ]
    assert [loc for loc, _ in _errors({"other": 1})] == [("other",)]


def test_text_checked_by_its_own_parser_keeps_its_nul() -> None:
    assert Outer.model_validate({"parsed": "a\x00b"}).parsed == "a\x00b"
    assert Outer.model_validate({"title": "ok"}).model_json_schema()["properties"]["title"] == {
        "default": "t",
        "maxLength": 5,
        "title": "Title",
        "type": "string",
    }


def test_a_where_expression_with_a_nul_is_400_at_its_position(
    client: TestClient, tenant: TenantFixture
) -> None:
    response = client.post(
        "/v1/segments", json={"name": "x", "where": "orders > 1\x00"}, headers=tenant.headers
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["details"][0] | {"message": ""} == {
        "path": "where",
        "message": "",
        "position": 10,
    }


def test_a_customer_token_with_a_nul_is_401(client: TestClient, tenant: TenantFixture) -> None:
    response = client.post(
        "/v1/storefront/sessions",
        json={"customer_token": "a\x00b"},
        headers=tenant.publishable_headers,
    )
    assert response.status_code == 401, response.text


def test_a_nul_in_a_body_is_422_naming_the_field(client: TestClient, tenant: TenantFixture) -> None:
    response = client.post(
        "/v1/webhooks",
        json={"url": "https://example.com/hook", "events": ["*"], "description": "a\x00"},
        headers=tenant.headers,
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"] == [
        {"path": "description", "message": NUL, "code": "value_error"}
    ]
