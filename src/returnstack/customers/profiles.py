"""Customer profiles: what each customer (or guest email) bought, returned and was refunded,
per currency, kept up to date in the transaction of every fact that changes them.

Who a fact belongs to (its owner): its customer id; else the customer its email is linked
to; else the email itself, as a guest. When an email is linked to a customer, the guest's
rows are added into the customer's. `rebuild` recomputes every row from the facts with the
same rules, in SQL, and reports where the incrementally kept rows differ.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from returnstack.customers import repository
from returnstack.customers.fields import COUNTERS, SUMS, customer_owner, guest_owner
from returnstack.customers.render import render_owner
from returnstack.kit.errors import ValidationFailed
from returnstack.kit.locks import lock_tables
from returnstack.kit.types import MAX_SAFE_INTEGER
from returnstack.outbox.service import DomainEvent
from returnstack.outbox.service import record as record_domain_events
from returnstack.returns.policy import SerialReturner, get_policy, serial_returner_rule


@dataclass(slots=True)
class Delta:
    """What facts add to one profile row (counters add; timestamps take the min or max)."""

    orders: int = 0
    items_purchased: int = 0
    gross_revenue: int = 0
    returns: int = 0
    items_returned: int = 0
    refunded: int = 0
    online_orders: int = 0
    offline_orders: int = 0
    online_returns: int = 0
    offline_returns: int = 0
    first_order_at: datetime | None = None
    last_order_at: datetime | None = None
    last_return_at: datetime | None = None

    def add(self, other: "Delta") -> None:
        for name in COUNTERS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.first_order_at = _earliest(self.first_order_at, other.first_order_at)
        self.last_order_at = _latest(self.last_order_at, other.last_order_at)
        self.last_return_at = _latest(self.last_return_at, other.last_return_at)


def _earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else min(a, b)


def _latest(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else max(a, b)


def order_delta(*, channel: str, placed_at: datetime) -> Delta:
    """A new order (its lines come as `lines_delta`)."""
    return Delta(
        orders=1,
        online_orders=int(channel == "online"),
        offline_orders=int(channel == "offline"),
        first_order_at=placed_at,
        last_order_at=placed_at,
    )


def lines_delta(lines: Iterable[tuple[int, int]]) -> Delta:
    """Newly recorded order lines, as (quantity, unit_price) pairs."""
    delta = Delta()
    for quantity, unit_price in lines:
        delta.items_purchased += quantity
        delta.gross_revenue += quantity * unit_price
    return delta


def return_delta(
    *,
    channel: str,
    created_at: datetime,
    units_before: int,
    units_received: int,
    refunded: int = 0,
) -> Delta:
    """Units of a return coming back (a return counts once its first unit is back) and
    money refunded for it. A recorded return comes back whole at once."""
    first = units_before == 0 and units_received > 0
    return Delta(
        returns=int(first),
        online_returns=int(first and channel == "online"),
        offline_returns=int(first and channel == "offline"),
        items_returned=units_received,
        refunded=refunded,
        last_return_at=created_at if first else None,
    )


@dataclass
class ProfileChanges:
    """Collects the deltas of one transaction's facts and applies them in one statement.

    Facts name their customer id and email as recorded; an email alone is resolved to the
    customer it is linked to, if any, when the deltas are applied.
    """

    session: Session
    tenant_id: str
    _facts: list[tuple[str | None, str | None, str, Delta]] = field(default_factory=list)

    def add(self, customer_id: str | None, email: str | None, currency: str, delta: Delta) -> None:
        if customer_id is not None or email is not None:
            self._facts.append((customer_id, email, currency, delta))

    def apply(self) -> None:
        if not self._facts:
            return
        alone = {email for cid, email, _, _ in self._facts if cid is None and email}
        links = repository.linked_customers(self.session, self.tenant_id, alone)
        rows: dict[tuple[str, str], tuple[str | None, str | None, Delta]] = {}
        for customer_id, email, currency, delta in self._facts:
            customer_id = customer_id or (links.get(email) if email else None)
            if customer_id is not None:
                key, guest = (customer_owner(customer_id), currency), None
            else:
                assert email is not None
                key, guest = (guest_owner(email), currency), email
            if key not in rows:
                rows[key] = (customer_id, guest, Delta())
            rows[key][2].add(delta)
        self._facts.clear()
        _upsert(self.session, self.tenant_id, rows)


def _rate(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator > 0 else 0.0


def _upsert(
    session: Session,
    tenant_id: str,
    rows: Mapping[tuple[str, str], tuple[str | None, str | None, Delta]],
) -> None:
    values = []
    for (owner, currency), (customer_id, guest_email, delta) in sorted(rows.items()):
        counters = {name: getattr(delta, name) for name in COUNTERS}
        values.append(
            {
                "tenant_id": tenant_id,
                "owner": owner,
                "currency": currency,
                "customer_id": customer_id,
                "guest_email": guest_email,
                **counters,
                "net_revenue": delta.gross_revenue - delta.refunded,
                "return_rate_items": _rate(delta.items_returned, delta.items_purchased),
                "return_rate_value": _rate(delta.refunded, delta.gross_revenue),
                "first_order_at": delta.first_order_at,
                "last_order_at": delta.last_order_at,
                "last_return_at": delta.last_return_at,
                "serial_returner": False,
            }
        )
    # A delta within bounds keeps every sum below 2^54 (no overflow on either database);
    # the sums returned are checked next. Either error rolls the request back.
    for row in values:
        _check_sums(row["currency"], (row[name] for name in SUMS))
    # Sorted by key, so concurrent transactions lock the rows in one order (no deadlocks).
    returned = repository.add_to_profiles(session, values)
    rule = serial_returner_rule(session, tenant_id=tenant_id)
    changed = []
    for owner, currency, orders, rate, was_flagged, *sums in returned:
        _check_sums(currency, sums)
        if (flagged := _is_serial_returner(rule, orders, rate)) != bool(was_flagged):
            changed.append((owner, currency, flagged))
    _set_flags(session, tenant_id, changed)


def _check_sums(currency: str, sums: Iterable[Any]) -> None:
    """Every stored sum stays within +-(2^53 - 1), which every JSON client reads exactly (on
    SQLite a sum past 2^63 would even turn into a float); more is the client's 422."""
    for name, value in zip(SUMS, sums, strict=True):
        if isinstance(value, int) and -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            continue
        raise ValidationFailed(
            f"This would take the customer's {name} in {currency} past {MAX_SAFE_INTEGER} "
            "(2^53 - 1), the largest amount every JSON client reads exactly; nothing was written.",
            details=[
                {
                    "path": f"totals.{currency}.{name}",
                    "message": f"would go past {MAX_SAFE_INTEGER} (2^53 - 1)",
                    "code": "total_out_of_range",
                    "field": name,
                }
            ],
        )


def _is_serial_returner(rule: SerialReturner, orders: int, return_rate_value: float) -> bool:
    return orders >= rule.min_orders and return_rate_value >= rule.return_rate_value


def _set_flags(session: Session, tenant_id: str, changed: list[tuple[str, str, bool]]) -> None:
    """Store flag changes; each is news: `customer.flagged` when a (customer, currency) is
    newly flagged, `customer.unflagged` when its flag clears."""
    by_owner: dict[tuple[bool, str], list[str]] = {}
    for owner, currency, flagged in changed:
        repository.set_flag(
            session, tenant_id=tenant_id, owner=owner, currency=currency, flag=flagged
        )
        by_owner.setdefault((flagged, owner), []).append(currency)
    if not by_owner:
        return
    events = []
    # Flags set first, then cleared; owners in order: the same order on every run.
    for (flagged, owner), currencies in sorted(
        by_owner.items(), key=lambda e: (not e[0][0], e[0][1])
    ):
        profile = render_owner(session, tenant_id=tenant_id, owner=owner)
        if profile is None:
            continue
        kind = "flagged" if flagged else "unflagged"
        events.append(
            DomainEvent(
                type=f"customer.{kind}",
                data={**profile, f"{kind}_currencies": sorted(currencies)},
                changes=None,
            )
        )
    record_domain_events(session, tenant_id=tenant_id, events=events)


def merge_guests(session: Session, *, tenant_id: str, links: Mapping[str, str | None]) -> None:
    """Move the rows of guest emails that are now linked to a customer into that customer's.

    Called with the links an event or request just made (or confirmed); an email linked
    before has no guest rows left, so this finds nothing for it.
    """
    owners = {guest_owner(email): cid for email, cid in links.items() if cid is not None}
    if not owners:
        return
    guests = repository.take_profiles(session, tenant_id=tenant_id, owners=owners)
    if not guests:
        return
    rows: dict[tuple[str, str], tuple[str | None, str | None, Delta]] = {}
    for guest in guests:
        customer_id = owners[guest.owner]
        key = (customer_owner(customer_id), guest.currency)
        if key not in rows:
            rows[key] = (customer_id, None, Delta())
        rows[key][2].add(
            Delta(
                **{name: getattr(guest, name) for name in COUNTERS},
                first_order_at=guest.first_order_at,
                last_order_at=guest.last_order_at,
                last_return_at=guest.last_return_at,
            )
        )
    _upsert(session, tenant_id, rows)


def reevaluate_flags(session: Session, *, tenant_id: str) -> None:
    """After a policy change: set and clear the serial returner flag of every row."""
    rule = get_policy(session, tenant_id=tenant_id).serial_returner
    changed = repository.flags_to_change(
        session, tenant_id=tenant_id, min_orders=rule.min_orders, min_rate=rule.return_rate_value
    )
    _set_flags(session, tenant_id, changed)


# --- rebuild -------------------------------------------------------------------------


@dataclass
class RebuildReport:
    tenant_id: str
    profiles: int  # rows after the rebuild
    differences: int  # (owner, currency) rows that were missing, extra or different
    examples: list[dict[str, Any]]  # a few of them: owner, currency, field: [kept, rebuilt]
    written: bool


def rebuild(
    session: Session, *, tenant_id: str, write: bool = True, examples: int = 10
) -> RebuildReport:
    """Recompute the tenant's profiles from the facts, report how the kept ones differ, and
    (with `write`) replace them. Runs in the caller's transaction, which it must commit."""
    # Writers of profile rows wait until this ends: their facts are either read below or
    # added onto the rebuilt rows.
    lock_tables(session, "customer_profiles")
    rule = get_policy(session, tenant_id=tenant_id).serial_returner
    profiles, differences, samples = repository.rebuild_profiles(
        session,
        tenant_id=tenant_id,
        min_orders=rule.min_orders,
        min_rate=rule.return_rate_value,
        write=write,
        examples=examples,
    )
    return RebuildReport(
        tenant_id=tenant_id,
        profiles=profiles,
        differences=differences,
        examples=samples,
        written=bool(write and differences),
    )
