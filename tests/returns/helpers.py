"""Helpers of the returns-management suites (API.md 4, 4.2, 11): a thin client over the
staff API that works the same with the in-process TestClient and with httpx against a real
server process (TestClient is an httpx.Client)."""

from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import select

from returnstack.models import OutboxEvent
from tests.conftest import DatabaseFixture, TenantFixture
from tests.factories import batch, item, purchase, return_event, ts, unique

# Every field of the return object listed in API.md 4.
RETURN_KEYS = {
    "id",
    "number",
    "external_id",
    "status",
    "source",
    "channel",
    "store",
    "customer",
    "currency",
    "items",
    "refund",
    "fees",
    "attachments",
    "metadata",
    "created_at",
    "updated_at",
    "closed_at",
    "version",
    "history",
}
ITEM_KEYS = {
    "order_id",
    "line_id",
    "product_id",
    "variant_id",
    "quantity",
    "received_quantity",
    "reason",
    "note",
    "resolution",
    "unit_price",
    "outcome",
    "disposition",
}
HISTORY_KEYS = {"at", "from", "to", "action", "actor", "note"}


def person() -> dict[str, str]:
    """A customer reference with both id and email."""
    return {"id": unique("cust"), "email": f"{unique('u')}@example.com"}


def line(line_id: str = "1", **fields: Any) -> dict[str, Any]:
    """A purchase line; unit price 1999 and quantity 1 unless told."""
    return item(line_id=line_id, **fields)


def wanted(order: dict[str, Any], line_id: str | None = "1", **fields: Any) -> dict[str, Any]:
    """A requested return item naming a line of the given purchase event."""
    body: dict[str, Any] = {"order_id": order["order_id"], "quantity": 1, "reason": "unwanted"}
    if line_id is not None:
        body["line_id"] = line_id
    return body | fields


def error_codes(response: httpx.Response) -> set[tuple[str, str]]:
    """(path, code) of each detail of a 422."""
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["type"] == "validation_failed", error
    return {(detail["path"], detail.get("code", "")) for detail in error["details"]}


@dataclass
class Api:
    """The staff API of one tenant."""

    http: httpx.Client
    tenant: TenantFixture

    # --- raw calls --------------------------------------------------------------------------

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.get(path, headers=self.tenant.headers, **kwargs)

    def post(
        self, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        return self.http.post(path, json=body, headers=self.tenant.headers | (headers or {}))

    def patch(self, path: str, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
        return self.http.patch(path, json=body, headers=self.tenant.headers | (headers or {}))

    def delete(
        self, path: str, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        return self.http.delete(path, headers=self.tenant.headers | (headers or {}), **kwargs)

    def put(self, path: str, body: Any) -> httpx.Response:
        return self.http.put(path, json=body, headers=self.tenant.headers)

    # --- events -----------------------------------------------------------------------------

    def send(self, *events: dict[str, Any]) -> None:
        response = self.post("/v1/events", batch(*events))
        assert response.status_code == 200, response.text
        assert response.json()["accepted"] == len(events), response.text

    def buy(
        self,
        *lines: dict[str, Any],
        customer: dict[str, str] | None = None,
        days_ago: float = 1,
        **fields: Any,
    ) -> dict[str, Any]:
        """Record a purchase and return its event (order_id, customer, items...)."""
        event = purchase(
            customer=customer or person(),
            timestamp=ts(days_ago),
            items=list(lines) or [line()],
            **fields,
        )
        self.send(event)
        return event

    def record_return(self, order: dict[str, Any], *items: dict[str, Any], **fields: Any) -> None:
        """A return that happened elsewhere, sent as an event (source "event")."""
        self.send(
            return_event(
                order_id=order["order_id"],
                customer=order["customer"],
                currency=order["currency"],
                items=list(items),
                **fields,
            )
        )

    # --- returns ----------------------------------------------------------------------------

    def open(self, *items: dict[str, Any], **fields: Any) -> dict[str, Any]:
        """POST /v1/returns that must succeed; returns the return object."""
        response = self.post("/v1/returns", {"items": list(items)} | fields)
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    def act(
        self,
        ret: dict[str, Any] | str,
        action: str,
        body: dict[str, Any] | None = None,
        *,
        expect: int = 200,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """POST /v1/returns/{id}/{action}; asserts the status code, returns the body."""
        return_id = ret if isinstance(ret, str) else ret["id"]
        response = self.post(f"/v1/returns/{return_id}/{action}", body, headers)
        assert response.status_code == expect, response.text
        result: dict[str, Any] = response.json()
        return result

    def read(self, ret: dict[str, Any] | str) -> dict[str, Any]:
        return_id = ret if isinstance(ret, str) else ret["id"]
        response = self.get(f"/v1/returns/{return_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def receive_all(self, ret: dict[str, Any]) -> dict[str, Any]:
        items = [
            {"order_id": i["order_id"], "line_id": i["line_id"], "quantity": i["quantity"]}
            for i in ret["items"]
        ]
        return self.act(ret, "receive", {"items": items})

    # --- orders and policy ------------------------------------------------------------------

    def order(self, order_id: str) -> dict[str, Any]:
        response = self.get(f"/v1/orders/{order_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def lines(self, order: dict[str, Any] | str) -> dict[str, tuple[int, int, int, int]]:
        """line_id -> (quantity, claimed, returned, returnable)."""
        order_id = order if isinstance(order, str) else order["order_id"]
        return {
            ln["line_id"]: (
                ln["quantity"],
                ln["claimed_quantity"],
                ln["returned_quantity"],
                ln["returnable_quantity"],
            )
            for ln in self.order(order_id)["lines"]
        }

    def returnable(self, order: dict[str, Any], line_id: str = "1") -> int:
        return self.lines(order)[line_id][3]

    def set_policy(self, **document: Any) -> dict[str, Any]:
        response = self.put("/v1/policy", document)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def list(self, **params: Any) -> list[dict[str, Any]]:
        """Every return matching the filters, across all pages."""
        found: list[dict[str, Any]] = []
        cursor = None
        while True:
            query = dict(params, limit=200) | ({"cursor": cursor} if cursor else {})
            response = self.get("/v1/returns", params=query)
            assert response.status_code == 200, response.text
            page = response.json()
            found.extend(page["data"])
            cursor = page["next_cursor"]
            if cursor is None:
                return found


def outbox_types(database: DatabaseFixture, tenant_id: str, return_id: str) -> list[str]:
    """Types of the outbox rows about one return, oldest first."""
    return [row.type for row in outbox_rows(database, tenant_id, return_id)]


def outbox_rows(database: DatabaseFixture, tenant_id: str, return_id: str) -> list[OutboxEvent]:
    with database.db.transaction(write=False) as session:
        rows = session.scalars(
            select(OutboxEvent)
            .where(OutboxEvent.tenant_id == tenant_id)
            .order_by(OutboxEvent.created_at, OutboxEvent.id)
        )
        return [row for row in rows if (row.data or {}).get("id") == return_id]


def all_outbox(database: DatabaseFixture, tenant_id: str) -> list[OutboxEvent]:
    with database.db.transaction(write=False) as session:
        return list(
            session.scalars(
                select(OutboxEvent)
                .where(OutboxEvent.tenant_id == tenant_id)
                .order_by(OutboxEvent.created_at, OutboxEvent.id)
            )
        )
