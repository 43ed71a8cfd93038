"""Emporix's list of returns as SQL: its `q` subset, `sort`, page number and total count,
over the returns of one tenant."""

import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, func, select, true
from sqlalchemy.orm import Session

from returnstack.compat.common import bad_request
from returnstack.models import OrderLine, Return, ReturnItem

APPROVAL_STATUSES: dict[str, tuple[str, ...]] = {
    "PENDING": ("requested",),
    "APPROVED": ("approved", "received", "refunded"),
    "REJECTED": ("declined",),
    "CLOSED": ("closed", "cancelled"),
}
STATUS_TO_APPROVAL = {
    status: name for name, statuses in APPROVAL_STATUSES.items() for status in statuses
}

SORTABLE: dict[str, Any] = {
    "metadata.createdAt": Return.created_at,
    "metadata.modifiedAt": Return.updated_at,
    "approvalStatus": Return.status,
    "id": Return.id,
}
_TERM = re.compile(r'(?P<field>[A-Za-z.]+):(?P<value>"[^"]*"|\([^)]*\)|\S+)')
_COMPARISON = re.compile(r"^(>=|<=|>|<)?(.*)$")


def _time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError):
        raise bad_request("q", f"{text!r} is not a date or an ISO 8601 time") from None


def _values(raw: str) -> list[str]:
    if raw.startswith("(") and raw.endswith(")"):
        values = [value.strip().strip('"') for value in raw[1:-1].split(",")]
        return [value for value in values if value]
    return [raw.strip('"')]


def _compare(column: Any, operator: str, value: Any) -> ColumnElement[bool]:
    comparisons = {
        ">": column > value,
        ">=": column >= value,
        "<": column < value,
        "<=": column <= value,
        "": column == value,
    }
    return comparisons[operator]


def parse_q(q: str | None) -> list[ColumnElement[bool]]:
    """`approvalStatus:PENDING requestor.customerId:c1 metadata.createdAt:>=2026-01-01`:
    terms joined by AND; exact values, comparisons on times, several values `f:(a,b)`."""
    if not q or not q.strip():
        return []
    conditions: list[ColumnElement[bool]] = []
    position = 0
    text = q.strip()
    while position < len(text):
        if text[position].isspace():
            position += 1
            continue
        match = _TERM.match(text, position)
        if match is None:
            raise bad_request("q", f"expected field:value at position {position}")
        position = match.end()
        name, raw = match["field"], match["value"]
        conditions.append(_condition(name, raw))
    return conditions


def _condition(name: str, raw: str) -> ColumnElement[bool]:
    if name in ("metadata.createdAt", "metadata.modifiedAt"):
        column = Return.created_at if name == "metadata.createdAt" else Return.updated_at
        comparison = _COMPARISON.match(raw)
        assert comparison is not None
        operator, value = comparison[1] or "", comparison[2]
        if value.startswith("(") and not operator:
            return column.in_([_time(item) for item in _values(value)])
        return _compare(column, operator, _time(value.strip('"')))
    values = _values(raw)
    if not values:
        raise bad_request("q", f"{name}: give a value")
    if name == "approvalStatus":
        unknown = [value for value in values if value.upper() not in APPROVAL_STATUSES]
        if unknown:
            raise bad_request("q", f"approvalStatus: unknown value {unknown[0]!r}")
        statuses = [s for value in values for s in APPROVAL_STATUSES[value.upper()]]
        return Return.status.in_(statuses)
    if name == "requestor.customerId":
        return Return.customer_id.in_(values)
    if name == "requestor.email":
        return Return.email.in_([value.lower() for value in values])
    if name == "id":
        return Return.id.in_(values)
    if name == "orders.id":
        return exists().where(
            ReturnItem.tenant_id == Return.tenant_id,
            ReturnItem.return_id == Return.id,
            ReturnItem.order_id.in_(values),
        )
    if name == "received":
        wanted = {value.lower() for value in values}
        if not wanted <= {"true", "false"}:
            raise bad_request("q", "received: must be true or false")
        received = exists().where(
            ReturnItem.tenant_id == Return.tenant_id,
            ReturnItem.return_id == Return.id,
            ReturnItem.received_quantity > 0,
        )
        if wanted == {"true", "false"}:
            return true()
        return received if "true" in wanted else ~received
    raise bad_request("q", f"cannot filter on {name!r}")


def parse_sort(sort: str | None) -> list[Any]:
    """`metadata.createdAt:desc,id:asc`; newest first by default."""
    order: list[Any] = []
    for part in (sort or "metadata.createdAt:desc").split(","):
        name, _, direction = part.strip().partition(":")
        column = SORTABLE.get(name)
        if column is None:
            raise bad_request("sort", f"cannot sort on {name!r}; one of {', '.join(SORTABLE)}")
        if direction.lower() not in ("", "asc", "desc"):
            raise bad_request("sort", f"{direction!r} must be asc or desc")
        order.append(column.desc() if direction.lower() == "desc" else column.asc())
    order.append(Return.id.asc())  # a stable order across pages
    return order


def list_returns(
    session: Session,
    *,
    tenant_id: str,
    conditions: list[ColumnElement[bool]],
    order_by: list[Any],
    page_size: int,
    page_number: int,
    with_total: bool,
) -> tuple[list[Return], int | None]:
    where = (
        and_(Return.tenant_id == tenant_id, *conditions)
        if conditions
        else Return.tenant_id == tenant_id
    )
    rows = list(
        session.scalars(
            select(Return)
            .where(where)
            .order_by(*order_by)
            .limit(page_size)
            .offset((page_number - 1) * page_size)
        )
    )
    total = None
    if with_total:
        total = int(session.scalar(select(func.count()).select_from(Return).where(where)) or 0)
    return rows, total


def line_names(
    session: Session, *, tenant_id: str, lines: Iterable[tuple[str, str | None]]
) -> dict[tuple[str, str], str | None]:
    """The names of order lines, for Emporix's item `name`."""
    wanted = {(order_id, line_id) for order_id, line_id in lines if line_id is not None}
    if not wanted:
        return {}
    orders = sorted({order_id for order_id, _ in wanted})
    names: dict[tuple[str, str], str | None] = {}
    for start in range(0, len(orders), 500):  # one query for a page, unless it is huge
        query = select(OrderLine.order_id, OrderLine.line_id, OrderLine.name).where(
            OrderLine.tenant_id == tenant_id, OrderLine.order_id.in_(orders[start : start + 500])
        )
        names.update(
            ((order_id, line_id), name)
            for order_id, line_id, name in session.execute(query)
            if (order_id, line_id) in wanted
        )
    return names
