"""Errors outside the domain, operations endpoints, request ids and the OpenAPI document
(API.md 1, 9)."""

import re
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from httpx import Response
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event

from tests.conftest import DatabaseFixture, TenantFixture
from tests.factories import batch, purchase


def assert_error_shape(response: Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert isinstance(error["type"], str)
    assert error["type"]
    assert isinstance(error["message"], str)
    assert error["message"]
    assert isinstance(error["details"], list)
    return error


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/nothing-here"),
        ("GET", "/"),
        ("POST", "/v1/event"),
        ("GET", "/v2/orders/o-1"),
        ("DELETE", "/v1/orders"),
    ],
)
def test_unknown_route_is_404_in_the_error_shape(
    client: TestClient, tenant: TenantFixture, method: str, path: str
) -> None:
    response = client.request(method, path, headers=tenant.headers)
    error = assert_error_shape(response, 404)
    assert error["type"] == "not_found"


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/v1/events", "POST"),
        ("PUT", "/v1/events", "POST"),
        ("DELETE", "/v1/orders/o-1", "GET"),
        ("POST", "/v1/orders/o-1", "GET"),
        ("POST", "/healthz", "GET"),
    ],
)
def test_wrong_method_is_405_in_the_error_shape(
    client: TestClient, tenant: TenantFixture, method: str, path: str, allowed: str
) -> None:
    response = client.request(method, path, headers=tenant.headers)
    assert_error_shape(response, 405)
    assert allowed in response.headers["allow"]


def test_request_id_is_echoed(client: TestClient, tenant: TenantFixture) -> None:
    for method, path in (("GET", "/healthz"), ("GET", "/v1/orders/none"), ("POST", "/v1/events")):
        response = client.request(
            method, path, headers={**tenant.headers, "X-Request-Id": "req-abc.123:4_5"}
        )
        assert response.headers["x-request-id"] == "req-abc.123:4_5"


def test_request_id_is_generated_when_absent_or_unusable(client: TestClient) -> None:
    first = client.get("/healthz").headers["x-request-id"]
    second = client.get("/healthz").headers["x-request-id"]
    assert first
    assert second
    assert first != second
    # A value that cannot be logged safely is replaced rather than echoed.
    odd = client.get("/healthz", headers={"X-Request-Id": "a b\tc" + "x" * 200})
    assert odd.headers["x-request-id"] != "a b\tc" + "x" * 200
    assert re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", odd.headers["x-request-id"])


def test_request_id_is_on_error_responses_too(client: TestClient) -> None:
    unauthenticated = client.get("/v1/orders/o-1", headers={"X-Request-Id": "err-1"})
    assert unauthenticated.status_code == 401
    assert unauthenticated.headers["x-request-id"] == "err-1"
    missing = client.get("/nowhere", headers={"X-Request-Id": "err-2"})
    assert missing.headers["x-request-id"] == "err-2"


def test_health_and_readiness(client: TestClient) -> None:
    health = client.get("/healthz")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ok"


def scrape(client: TestClient) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """metric sample name -> labels -> value."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[labels] = sample.value
    return samples


def requests_total(metrics: dict[str, Any], route: str, method: str, status: str) -> float:
    labels = (("method", method), ("route", route), ("status", status))
    value: float = metrics.get("returnstack_http_requests_total", {}).get(labels, 0.0)
    return value


def test_metrics_count_requests_events_and_outbox_backlog(
    client: TestClient, tenant: TenantFixture
) -> None:
    before = scrape(client)
    events = [purchase(), purchase(), purchase()]
    assert client.post("/v1/events", json=batch(*events), headers=tenant.headers).status_code == 200
    # Duplicates are not ingested again.
    assert (
        client.post("/v1/events", json=batch(events[0]), headers=tenant.headers).status_code == 200
    )
    assert (
        client.get(f"/v1/orders/{events[0]['order_id']}", headers=tenant.headers).status_code == 200
    )
    assert client.get("/v1/orders/nope", headers=tenant.headers).status_code == 404
    assert client.post("/v1/events", json={"events": []}, headers=tenant.headers).status_code == 422
    after = scrape(client)

    def delta(route: str, method: str, status: str) -> float:
        return requests_total(after, route, method, status) - requests_total(
            before, route, method, status
        )

    assert delta("/v1/events", "POST", "200") == 2
    assert delta("/v1/events", "POST", "422") == 1
    assert delta("/v1/orders/{order_id}", "GET", "200") == 1
    assert delta("/v1/orders/{order_id}", "GET", "404") == 1

    ingested = "returnstack_events_ingested_total"
    assert after[ingested][()] - before.get(ingested, {}).get((), 0.0) == 3
    backlog = "returnstack_outbox_backlog"
    assert after[backlog][()] - before[backlog][()] == 3
    assert "returnstack_http_request_duration_seconds_count" in after


def test_openapi_document_describes_post_events(client: TestClient) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    document = orjson.loads(response.content)
    assert document["openapi"].startswith("3.")
    operation = document["paths"]["/v1/events"]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    components = document["components"]["schemas"]

    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            node = components[node["$ref"].rsplit("/", 1)[-1]]
        return node

    body = resolve(schema)
    assert "events" in body["properties"]
    assert "events" in body.get("required", [])
    event_schema = body["properties"]["events"]["items"]
    variants = [resolve(v) for v in event_schema.get("oneOf", event_schema.get("anyOf", []))]
    assert {
        tuple(sorted(v["properties"]["type"].get("enum", [v["properties"]["type"].get("const")])))
        for v in variants
    } == {
        ("purchase",),
        ("return",),
    }
    purchase_schema = next(v for v in variants if "purchase" in str(v["properties"]["type"]))
    for field in ("id", "timestamp", "order_id", "items"):
        assert field in purchase_schema["properties"]
    assert "200" in operation["responses"]
    assert "422" in operation["responses"]
    assert "/v1/orders/{order_id}" in document["paths"]


def test_malformed_input_never_yields_a_500(
    client: TestClient, tenant: TenantFixture, database: DatabaseFixture
) -> None:
    """A handful of hostile bodies and paths: each is a 4xx in the error shape."""
    bodies: list[bytes] = [
        b'{"events": [{"type": "purchase", "id": "\\u0000", "order_id": "\\u0000"}]}',
        b'{"events": [{"type": ["purchase"]}]}',
        b'{"events": [{"type": {"x": 1}}]}',
        b'{"events": [' + b"[" * 5000 + b"]" * 5000 + b"]}",
        b'{"events": [{"type": "purchase", "items": [' + b"{}," * 600 + b"{}]}]}",
        b'{"events": [{"type": "purchase", "id": "\\ud800"}]}',
    ]
    for body in bodies:
        response = client.post(
            "/v1/events",
            content=body,
            headers={**tenant.headers, "Content-Type": "application/json"},
        )
        assert 400 <= response.status_code < 500, (body[:80], response.status_code, response.text)
        assert_error_shape(response, response.status_code)
    for order_id in ("x" * 129, "%2F..%2F", "..", "%20"):
        response = client.get(f"/v1/orders/{order_id}", headers=tenant.headers)
        assert 400 <= response.status_code < 500, (order_id, response.status_code, response.text)
        assert_error_shape(response, response.status_code)


def test_an_invalid_query_parameter_is_400_naming_it(
    client: TestClient, tenant: TenantFixture, database: DatabaseFixture
) -> None:
    sale = purchase()
    response = client.post(
        "/v1/events", json=batch(sale), headers=tenant.headers, params={"partial": "maybe"}
    )
    error = assert_error_shape(response, 400)
    assert error["type"] == "invalid_request"
    assert [detail["path"] for detail in error["details"]] == ["partial"]
    assert client.get(f"/v1/orders/{sale['order_id']}", headers=tenant.headers).status_code == 404


def test_an_internal_error_is_a_500_in_the_error_shape_with_the_request_id(
    client: TestClient, tenant: TenantFixture, database: DatabaseFixture
) -> None:
    """When the server fails (here: the database fails a statement of this request), the
    client still gets the error shape and the request id to quote in a bug report."""

    def fail(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        if tenant.id in repr(parameters) and "FROM orders" in statement:
            raise RuntimeError("injected database failure")

    event.listen(database.db.engine, "before_cursor_execute", fail)
    try:
        response = client.get(
            "/v1/orders/o-1", headers={**tenant.headers, "X-Request-Id": "boom-1"}
        )
    finally:
        event.remove(database.db.engine, "before_cursor_execute", fail)
    error = assert_error_shape(response, 500)
    assert error["type"] == "internal_error"
    assert "injected" not in response.text  # internals are logged, not shown
    assert response.headers.get("x-request-id") == "boom-1"
