"""Profiles as the API shows them: one customer (or guest email), all currencies."""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from returnstack.customers import repository
from returnstack.customers.fields import (
    CHANNELS,
    SERIAL_RETURNER,
    TOTALS,
    customer_owner,
    guest_owner,
)
from returnstack.kit.timefmt import rfc3339
from returnstack.models import CustomerProfile


def render_profile(
    *,
    server_id: str | None,
    customer_id: str | None,
    email: str | None,
    emails: Sequence[str],
    rows: Sequence[CustomerProfile],
) -> dict[str, Any]:
    def edge(values: list[datetime | None], pick: Any) -> str | None:
        present = [value for value in values if value is not None]
        return rfc3339(pick(present)) if present else None

    flags = sorted({SERIAL_RETURNER for row in rows if row.serial_returner})
    return {
        "id": server_id,
        "customer": {"id": customer_id, "email": email, "emails": list(emails)},
        "first_order_at": edge([row.first_order_at for row in rows], min),
        "last_order_at": edge([row.last_order_at for row in rows], max),
        "last_return_at": edge([row.last_return_at for row in rows], max),
        "totals": {
            row.currency: {name: getattr(row, name) for name in TOTALS}
            for row in sorted(rows, key=lambda row: row.currency)
        },
        "channels": {
            channel: {
                "orders": sum(getattr(row, f"{channel}_orders") for row in rows),
                "returns": sum(getattr(row, f"{channel}_returns") for row in rows),
            }
            for channel in CHANNELS
        },
        "flags": flags,
    }


def customer_exists(session: Session, *, tenant_id: str, customer_id: str) -> bool:
    """Known by a customer record or by profile rows (not erased)."""
    if repository.find_customer(session, tenant_id=tenant_id, customer_id=customer_id):
        return True
    return repository.has_profile(session, tenant_id=tenant_id, owner=customer_owner(customer_id))


def customer_profile(
    session: Session, *, tenant_id: str, customer_id: str
) -> dict[str, Any] | None:
    """The customer's profile; None for an id never seen (or erased)."""
    customer = repository.find_customer(session, tenant_id=tenant_id, customer_id=customer_id)
    rows = repository.profile_rows(session, tenant_id=tenant_id, owner=customer_owner(customer_id))
    if customer is None and not rows:
        return None
    emails = repository.linked_emails(session, tenant_id=tenant_id, customer_id=customer_id)
    email = customer.email if customer is not None and customer.email else None
    return render_profile(
        server_id=customer.server_id if customer is not None else None,
        customer_id=customer_id,
        email=email or (emails[0] if emails else None),
        emails=emails,
        rows=rows,
    )


def email_profile(session: Session, *, tenant_id: str, email: str) -> dict[str, Any] | None:
    """The profile of the customer an email is linked to, else of that email as a guest."""
    link = repository.find_email(session, tenant_id=tenant_id, email=email)
    if link is not None and link.customer_id is not None:
        return customer_profile(session, tenant_id=tenant_id, customer_id=link.customer_id)
    rows = repository.profile_rows(session, tenant_id=tenant_id, owner=guest_owner(email))
    if link is None and not rows:
        return None
    return render_profile(
        server_id=link.server_id if link is not None else None,
        customer_id=None,
        email=email,
        emails=[email],
        rows=rows,
    )


def render_owner(session: Session, *, tenant_id: str, owner: str) -> dict[str, Any] | None:
    kind, _, key = owner.partition(":")
    if kind == "c":
        return customer_profile(session, tenant_id=tenant_id, customer_id=key)
    return email_profile(session, tenant_id=tenant_id, email=key)
