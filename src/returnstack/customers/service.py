"""Customer records for what events identify: a customer id, an email, or both."""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func
from sqlalchemy.orm import Session

from returnstack.kit.db import upsert
from returnstack.models import Customer, CustomerEmail


@dataclass(frozen=True, slots=True)
class Identity:
    customer_id: str | None
    email: str | None  # normalised
    name: str | None = None


def remember(session: Session, *, tenant_id: str, identities: Iterable[Identity]) -> None:
    """Create or update the customers and emails named, linking an email to a customer id
    once both arrive together (the first link wins, so merges are deterministic)."""
    now = datetime.now(UTC)
    customers: dict[str, dict[str, object]] = {}
    emails: dict[str, str | None] = {}
    for identity in identities:
        if identity.customer_id is not None:
            known = customers.get(identity.customer_id)
            customers[identity.customer_id] = {
                "tenant_id": tenant_id,
                "id": identity.customer_id,
                "email": identity.email or (known["email"] if known else None),
                "name": identity.name or (known["name"] if known else None),
                "created_at": now,
                "updated_at": now,
            }
        if identity.email is not None:
            emails[identity.email] = emails.get(identity.email) or identity.customer_id
    connection = session.connection()
    if customers:
        table = Customer.__table__
        stmt = upsert(
            session,
            table,
            keys=["tenant_id", "id"],
            update={
                "email": lambda new: func.coalesce(new.email, table.c.email),
                "name": lambda new: func.coalesce(new.name, table.c.name),
                "updated_at": lambda new: new.updated_at,
            },
        )
        connection.execute(stmt, list(customers.values()))
    if emails:
        table = CustomerEmail.__table__
        stmt = upsert(
            session,
            table,
            keys=["tenant_id", "email"],
            update={"customer_id": lambda new: func.coalesce(table.c.customer_id, new.customer_id)},
        )
        connection.execute(
            stmt,
            [
                {"tenant_id": tenant_id, "email": email, "customer_id": customer_id, "created_at": now}
                for email, customer_id in emails.items()
            ],
        )
