"""Customer records for what events identify: a customer id, an email, or both."""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from returnstack.customers import repository
from returnstack.customers.profiles import merge_guests
from returnstack.kit.ids import new_id


@dataclass(frozen=True, slots=True)
class Identity:
    customer_id: str | None
    email: str | None  # normalised
    name: str | None = None


def remember(session: Session, *, tenant_id: str, identities: Iterable[Identity]) -> None:
    """Create or update the customers and emails named, linking an email to a customer id
    once both arrive together (the first link wins, so merges are deterministic).

    A guest whose email was just linked has its profile moved to the customer.
    """
    now = datetime.now(UTC)
    customers: dict[str, dict[str, object]] = {}
    emails: dict[str, str | None] = {}
    for identity in identities:
        if identity.customer_id is not None:
            known = customers.get(identity.customer_id)
            customers[identity.customer_id] = {
                "tenant_id": tenant_id,
                "id": identity.customer_id,
                # A customer keeps the id it got first (the upsert below never changes it).
                "server_id": known["server_id"] if known else new_id("cus"),
                "email": identity.email or (known["email"] if known else None),
                "name": identity.name or (known["name"] if known else None),
                "created_at": now,
                "updated_at": now,
            }
        if identity.email is not None:
            emails[identity.email] = emails.get(identity.email) or identity.customer_id
    repository.upsert_customers(session, [customers[key] for key in sorted(customers)])
    linked = repository.upsert_emails(
        session,
        [
            {
                "tenant_id": tenant_id,
                "email": email,
                "customer_id": cid,
                # Only a guest has an id of its own (a linked email shows its customer's).
                "server_id": None if cid is not None else new_id("cus"),
                "created_at": now,
            }
            for email, cid in sorted(emails.items())
        ],
    )
    # Only a guest email linked just now can have guest rows (an email linked before has
    # none left; one new to the database has none yet): most facts have nothing to merge.
    merge_guests(session, tenant_id=tenant_id, links=linked)
