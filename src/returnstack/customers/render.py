"""Profiles as the API shows them: one customer (or guest email), all currencies.

Read with two Core queries (who the person is, then their profile rows) and built as plain
dicts in the API's field order, so an endpoint can answer `orjson.dumps` of them as they are.
"""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from returnstack.customers import repository
from returnstack.customers.fields import (
    CHANNELS,
    COUNTED,
    SERIAL_RETURNER,
    customer_owner,
    guest_owner,
)
from returnstack.kit.timefmt import rfc3339

Reader = Session | Connection


def _connection(reader: Reader) -> Connection:
    return reader.connection() if isinstance(reader, Session) else reader


def render_profile(
    *,
    server_id: str | None,
    customer_id: str | None,
    email: str | None,
    emails: Sequence[str],
    rows: Sequence[Row[Any]],
) -> dict[str, Any]:
    def edge(values: list[datetime | None], pick: Any) -> str | None:
        present = [value for value in values if value is not None]
        return rfc3339(pick(present)) if present else None

    flags = sorted({SERIAL_RETURNER for row in rows if row.serial_returner})
    totals = {}
    for row in sorted(rows, key=lambda row: row.currency):
        values: dict[str, Any] = {name: getattr(row, name) for name in COUNTED}
        values["net_revenue"] = row.net_revenue
        # Rates are floats in the API (a stored 0 may come back as an integer).
        values["return_rate_items"] = float(row.return_rate_items)
        values["return_rate_value"] = float(row.return_rate_value)
        totals[row.currency] = values
    return {
        "id": server_id,
        "customer": {"id": customer_id, "email": email, "emails": list(emails)},
        "first_order_at": edge([row.first_order_at for row in rows], min),
        "last_order_at": edge([row.last_order_at for row in rows], max),
        "last_return_at": edge([row.last_return_at for row in rows], max),
        "totals": totals,
        "channels": {
            channel: {
                "orders": sum(getattr(row, f"{channel}_orders") for row in rows),
                "returns": sum(getattr(row, f"{channel}_returns") for row in rows),
            }
            for channel in CHANNELS
        },
        "flags": flags,
    }


def customer_exists(reader: Reader, *, tenant_id: str, customer_id: str) -> bool:
    """Known by a customer record or by profile rows (not erased)."""
    record, has_profile, _ = repository.identity(
        _connection(reader), tenant_id=tenant_id, customer_id=customer_id
    )
    return record is not None or has_profile


def _customer(
    connection: Connection,
    tenant_id: str,
    customer_id: str,
    record: Row[Any] | None,
    emails: list[str],
) -> dict[str, Any] | None:
    rows = repository.profile_values(
        connection, tenant_id=tenant_id, owner=customer_owner(customer_id)
    )
    if record is None and not rows:
        return None
    email = record.b if record is not None and record.b else None
    return render_profile(
        server_id=record.a if record is not None else None,
        customer_id=customer_id,
        email=email or (emails[0] if emails else None),
        emails=emails,
        rows=rows,
    )


def customer_profile(reader: Reader, *, tenant_id: str, customer_id: str) -> dict[str, Any] | None:
    """The customer's profile; None for an id never seen (or erased)."""
    connection = _connection(reader)
    record, _, emails = repository.identity(
        connection, tenant_id=tenant_id, customer_id=customer_id
    )
    return _customer(connection, tenant_id, customer_id, record, emails)


def email_profile(reader: Reader, *, tenant_id: str, email: str) -> dict[str, Any] | None:
    """The profile of the customer an email is linked to, else of that email as a guest."""
    connection = _connection(reader)
    link, record, emails = repository.email_identity(connection, tenant_id=tenant_id, email=email)
    if link is not None and link.a is not None:
        return _customer(connection, tenant_id, link.a, record, emails)
    rows = repository.profile_values(connection, tenant_id=tenant_id, owner=guest_owner(email))
    if link is None and not rows:
        return None
    return render_profile(
        server_id=link.b if link is not None else None,
        customer_id=None,
        email=email,
        emails=[email],
        rows=rows,
    )


def render_owner(reader: Reader, *, tenant_id: str, owner: str) -> dict[str, Any] | None:
    kind, _, key = owner.partition(":")
    if kind == "c":
        return customer_profile(reader, tenant_id=tenant_id, customer_id=key)
    return email_profile(reader, tenant_id=tenant_id, email=key)
