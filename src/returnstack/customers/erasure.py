"""Erasing a person's data (the right to be forgotten): a customer by id, or a person known
only by email (a guest). `customers/personal_data.py` lists every home this clears.

The facts stay, anonymous: order lines and return items still count for products and
reports, but nothing links them to the person any more. Their profile goes, their id and
emails can no longer be looked up, and nothing stored or sent afterwards names them. One
`customer.erased` event (data: the server id only) tells receivers to forget them too.
"""

import logging
import re
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import event
from sqlalchemy.orm import Session

from returnstack.customers import repository
from returnstack.customers.expressions import rewrite_literals
from returnstack.customers.fields import customer_owner, guest_owner
from returnstack.customers.render import customer_exists
from returnstack.kit.errors import NotFound
from returnstack.outbox.service import DomainEvent
from returnstack.outbox.service import record as record_domain_events
from returnstack.returns.attachments import AttachmentStorage

log = logging.getLogger(__name__)

STOREFRONT_CUSTOMER = "storefront:customer"  # the history actor of an erased customer
ERASED = "[erased]"


@dataclass(frozen=True)
class Person:
    """Whom to erase: a customer id (None for a guest) and every email of theirs."""

    customer_id: str | None
    emails: tuple[str, ...]  # normalised (lower case)
    names: tuple[str, ...]  # as given in events (customers.name)
    server_ids: tuple[str, ...]  # the ids webhooks knew them by

    @property
    def actor(self) -> str | None:
        return f"{STOREFRONT_CUSTOMER}:{self.customer_id}" if self.customer_id else None

    def email_in(self, text: str) -> bool:
        """Whether text holds one of their emails (any case)."""
        lowered = text.lower()
        return any(email in lowered for email in self.emails)

    def is_them(self, reference: Any) -> bool:
        """A customer object ({"id", "email", ...}) of the person."""
        if not isinstance(reference, dict):
            return False
        email = reference.get("email")
        return (self.customer_id is not None and reference.get("id") == self.customer_id) or (
            isinstance(email, str) and email.lower() in self.emails
        )

    def named_in(self, text: str) -> bool:
        """Whether free text names the person: an email anywhere (any case), the id as a
        word of its own (so customer "42" is not found in "SKU-1425")."""
        if self.email_in(text):
            return True
        return self.customer_id is not None and _word(self.customer_id).search(text) is not None

    def redact(self, text: str) -> str:
        for email in self.emails:
            text = re.sub(re.escape(email), ERASED, text, flags=re.IGNORECASE)
        if self.customer_id is not None:
            text = _word(self.customer_id).sub(ERASED, text)
        return text


def _word(value: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![A-Za-z0-9]){re.escape(value)}(?![A-Za-z0-9])")


def erase_customer(
    session: Session, *, tenant_id: str, customer_id: str, storage: AttachmentStorage
) -> None:
    """Erase a customer and everything recorded under their id or a linked email; 404 for
    an unknown (or erased) id. Attachment files are deleted after the transaction commits
    (a rollback keeps them)."""
    person = _customer(session, tenant_id, customer_id)
    if person is None:
        raise NotFound(f"No customer {customer_id!r}.")
    _erase(session, tenant_id, person, storage)


def erase_email(
    session: Session, *, tenant_id: str, email: str, storage: AttachmentStorage
) -> None:
    """Erase the person an email (normalised) belongs to: the customer it is linked to, or
    else the guest known only by it; 404 when the email was never seen (or is erased)."""
    link = repository.find_email(session, tenant_id=tenant_id, email=email)
    if link is not None and link.customer_id is not None:
        erase_customer(session, tenant_id=tenant_id, customer_id=link.customer_id, storage=storage)
        return
    if link is None and not repository.email_seen(session, tenant_id=tenant_id, email=email):
        raise NotFound("No customer with this email.")
    person = Person(
        customer_id=None,
        emails=(email,),
        names=(),
        server_ids=(link.server_id,) if link is not None and link.server_id else (),
    )
    _erase(session, tenant_id, person, storage)


def _customer(session: Session, tenant_id: str, customer_id: str) -> Person | None:
    if not customer_exists(session, tenant_id=tenant_id, customer_id=customer_id):
        return None
    customer = repository.find_customer(session, tenant_id=tenant_id, customer_id=customer_id)
    emails = set(repository.linked_emails(session, tenant_id=tenant_id, customer_id=customer_id))
    if customer is not None and customer.email and customer.email not in emails:
        # The latest email given with the id, unless another customer owns it.
        link = repository.find_email(session, tenant_id=tenant_id, email=customer.email)
        if link is None or link.customer_id is None:
            emails.add(customer.email)
    guest_ids = repository.guest_server_ids(session, tenant_id=tenant_id, emails=emails)
    server_ids = [customer.server_id] if customer is not None else []
    return Person(
        customer_id=customer_id,
        emails=tuple(sorted(emails)),
        names=(customer.name,) if customer is not None and customer.name else (),
        server_ids=tuple(dict.fromkeys(sid for sid in [*server_ids, *guest_ids] if sid)),
    )


def _erase(session: Session, tenant_id: str, person: Person, storage: AttachmentStorage) -> None:
    customer_id, emails = person.customer_id, list(person.emails)
    return_ids = repository.their_return_ids(
        session, tenant_id=tenant_id, customer_id=customer_id, emails=emails
    )
    if return_ids:  # notes, metadata, files and their actor name go; items and history stay
        keys = repository.wipe_returns(
            session,
            tenant_id=tenant_id,
            return_ids=return_ids,
            actor=person.actor,
            anonymous=STOREFRONT_CUSTOMER,
        )
        if keys:
            _delete_files_after_commit(session, storage, keys)
    owners = [guest_owner(email) for email in emails]
    if customer_id is not None:
        owners.append(customer_owner(customer_id))
    repository.forget_person(
        session, tenant_id=tenant_id, customer_id=customer_id, emails=emails, owners=owners
    )
    _rewrite_segments(session, tenant_id, person)
    _redact_lines(session, tenant_id, person)
    _drop_replays(session, tenant_id, person, return_ids)
    _scrub_outbox(session, tenant_id, person, return_ids)
    _scrub_delivery_responses(session, tenant_id, person, return_ids)
    record_domain_events(
        session,
        tenant_id=tenant_id,
        events=[DomainEvent(type="customer.erased", data={"id": sid}) for sid in person.server_ids],
    )
    log.info(
        "customer.erased",
        extra={"tenant_id": tenant_id, "returns": len(return_ids), "guest": customer_id is None},
    )


def _delete_files_after_commit(
    session: Session, storage: AttachmentStorage, keys: list[str]
) -> None:
    def remove(_session: Session) -> None:
        for key in keys:
            try:
                storage.delete(key)
            except Exception:  # the rows are gone; a file left over is logged, not fatal
                log.exception("attachment.erase_failed", extra={"storage_key": key})

    event.listen(session, "after_commit", remove, once=True)


def _rewrite_segments(session: Session, tenant_id: str, person: Person) -> None:
    """Saved segments stay (they are the merchant's), but a literal that names the person
    becomes "", which no customer id or email equals: for everyone still stored, the
    segment means what it meant."""

    def names_them(field: str, value: str) -> bool:
        if field == "email":
            return value.strip().lower() in person.emails
        return field == "customer_id" and value == person.customer_id

    for segment in repository.segments_of(session, tenant_id=tenant_id):
        expression = rewrite_literals(segment.expression, names_them)
        name = person.redact(segment.name) if person.named_in(segment.name) else segment.name
        if (expression, name) != (segment.expression, segment.name):
            segment.expression, segment.name = expression, name
    session.flush()


def _redact_lines(session: Session, tenant_id: str, person: Person) -> None:
    """Their emails in the free text of order lines (a product name, a page), anyone's
    lines: what was sold stays, the email becomes [erased]. Emails only: an id as text is
    not theirs to claim (API.md section 5)."""
    emails = Person(None, person.emails, (), ())  # redacts emails, not the id
    for line in repository.lines_naming(session, tenant_id=tenant_id, emails=person.emails):
        # "[erased]" may be longer than a short email: cut to the column's length.
        line.name = emails.redact(line.name)[:500] if line.name else line.name
        line.url = emails.redact(line.url)[:2048] if line.url else line.url
    session.flush()


def _drop_replays(session: Session, tenant_id: str, person: Person, return_ids: list[str]) -> None:
    """Stored responses (idempotency replays, every scope) that name the person or show one
    of their returns. A retry with such a key does the work again, as after 24 h."""
    finder = _Finder(person, frozenset(return_ids))
    stale = [
        (scope, key)
        for scope, key, body in repository.replays(session, tenant_id=tenant_id)
        if person.email_in(key) or finder.in_body(bytes(body))
    ]
    repository.delete_replays(session, tenant_id=tenant_id, keys=stale)


def _scrub_outbox(session: Session, tenant_id: str, person: Person, return_ids: list[str]) -> None:
    """Outbox events (webhook payloads) keep their shape without the person, in `data` and
    on both sides of `changes`: events about them (their orders, returns, profile) lose the
    customer reference, and those of their returns notes, metadata and attachments; in any
    event their email disappears from free text and their storefront actor is anonymised."""
    quoted = [orjson.dumps(value).decode() for value in (person.customer_id, person.actor) if value]
    rows = repository.outbox_events_naming(
        session, tenant_id=tenant_id, needles=quoted + return_ids, emails=person.emails
    )
    finder = _Finder(person, frozenset(return_ids))
    for row in rows:
        data = row.data if isinstance(row.data, dict) else {}
        scrub = _Scrubber(
            person,
            about=finder.about(data),
            wipe=data.get("id") in finder.return_ids,
        )
        row.data = scrub.value(row.data)
        if row.changes is not None:
            row.changes = scrub.changes(row.changes)
    session.flush()


def _scrub_delivery_responses(
    session: Session, tenant_id: str, person: Person, return_ids: list[str]
) -> None:
    """A receiver may echo what it was sent: the kept snippets of its answers that name the
    person or one of their returns are dropped."""
    needles = [value for value in (person.customer_id, *return_ids) if value]
    rows = repository.deliveries_naming(
        session, tenant_id=tenant_id, needles=needles, emails=person.emails
    )
    named = [
        delivery_id
        for delivery_id, body in rows.items()
        if body and (person.named_in(body) or any(rid in body for rid in return_ids))
    ]
    repository.clear_delivery_responses(session, tenant_id=tenant_id, ids=named)


@dataclass(frozen=True)
class _Finder:
    """Where stored JSON names the person. Emails are distinctive: found anywhere, in any
    case. A customer id may be short ("42", like a line id): it counts only in the places
    that hold customer ids (a `customer` object, a `customer_id` field, the actor)."""

    person: Person
    return_ids: frozenset[str]

    def about(self, data: dict[str, Any]) -> bool:
        """The event is about the person: their order, return or profile."""
        return data.get("id") in self.return_ids or self.person.is_them(data.get("customer"))

    def in_text(self, text: str) -> bool:
        return (
            self.person.email_in(text)
            or text == self.person.actor
            or any(return_id in text for return_id in self.return_ids)
        )

    def in_body(self, body: bytes) -> bool:
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError:
            return self.in_text(body.decode("utf-8", "replace"))
        return self._in(value)

    def _in(self, value: Any) -> bool:
        if isinstance(value, dict):
            if self.person.is_them(value.get("customer")):
                return True
            if self.person.customer_id is not None and (
                value.get("customer_id") == self.person.customer_id
            ):
                return True
            return any(self.in_text(str(key)) or self._in(item) for key, item in value.items())
        if isinstance(value, list):
            return any(self._in(item) for item in value)
        return isinstance(value, str) and self.in_text(value)


# What the events of an erased person's return lose: free text and files.
_WIPED_DATA: dict[str, Any] = {"note": None, "metadata": {}, "attachments": []}
_WIPED_SIDE: dict[str, Any] = {"note": None, "metadata": {}, "attachments": None}


@dataclass(frozen=True)
class _Scrubber:
    person: Person
    about: bool  # the event is about the person (their order, return or profile)
    wipe: bool  # the event is about one of their returns

    def value(self, value: Any, key: str | None = None) -> Any:
        if self.wipe and key in _WIPED_DATA and value is not None:
            return _WIPED_DATA[key]
        if isinstance(value, dict):
            if key == "customer" and self.person.is_them(value):
                # The reference keeps its shape, with nothing in it.
                return {
                    name: [] if isinstance(item, list) else None for name, item in value.items()
                }
            return {
                name: None
                if name == "customer_id" and item == self.person.customer_id
                else self.value(item, name)
                for name, item in value.items()
                if not self._names(str(name))
            }
        if isinstance(value, list):
            return [
                self.value(item)
                for item in value
                if not (isinstance(item, str) and self._names(item))
            ]
        if isinstance(value, str):
            return self._string(value)
        return value

    def changes(self, changes: dict[str, Any]) -> dict[str, Any]:
        """`{field: [before, after]}`: each side is scrubbed (or wiped) as the field's value."""
        scrubbed: dict[str, Any] = {}
        for field, pair in changes.items():
            if self.wipe and field in _WIPED_SIDE and isinstance(pair, list):
                scrubbed[field] = [None if side is None else _WIPED_SIDE[field] for side in pair]
            elif isinstance(pair, list):
                scrubbed[field] = [self.value(side, field) for side in pair]
            else:
                scrubbed[field] = self.value(pair, field)
        return scrubbed

    def _names(self, text: str) -> bool:
        """Free text naming the person: their email anywhere; in an event about them, also
        their name as given in events."""
        return self.person.email_in(text) or (self.about and text in self.person.names)

    def _string(self, text: str) -> str | None:
        if self.person.actor is not None and text == self.person.actor:
            return STOREFRONT_CUSTOMER
        return None if self._names(text) else text
