"""Open carts (Sailthru's `incomplete: 1` purchases): one per person, never revenue.

A cart is kept so that the integration's data moves over whole, but it is no fact: it makes
no order, changes no profile and counts for no product. As Sailthru keeps it, a person has
one cart: a newer one replaces it, and a completed purchase by the same email removes it.
Erasure deletes it (customers/erasure.py).
"""

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete
from sqlalchemy.orm import Session

from returnstack.kit.bulk import insert_rows
from returnstack.models import Cart

_REPLACE = "ON CONFLICT (tenant_id, email) DO UPDATE SET " + ", ".join(
    f"{name} = excluded.{name}"
    for name in ("source", "extid", "currency", "items", "value", "carted_at", "updated_at")
)


def keep_cart(
    session: Session,
    *,
    tenant_id: str,
    source: str,
    email: str,
    extid: str | None,
    currency: str,
    items: Sequence[dict[str, Any]],
    carted_at: datetime,
) -> None:
    """Store the person's cart, replacing the one they had."""
    row = {
        "tenant_id": tenant_id,
        "email": email,
        "source": source,
        "extid": extid,
        "currency": currency,
        "items": list(items),
        "value": sum(item["qty"] * item["price"] for item in items),
        "carted_at": carted_at,
        "updated_at": datetime.now(UTC),
    }
    insert_rows(session, Cart, [row], on_conflict=_REPLACE)


def close_cart(session: Session, *, tenant_id: str, email: str) -> None:
    """A completed purchase by the person: their cart is gone (it was checked out)."""
    session.execute(delete(Cart).where(Cart.tenant_id == tenant_id, Cart.email == email))
