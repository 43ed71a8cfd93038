"""Customer profiles: what each customer (or guest email) bought, returned and was refunded,
per currency, kept up to date in the transaction of every fact that changes them.

Who a fact belongs to (its owner): its customer id; else the customer its email is linked
to; else the email itself, as a guest. When an email is linked to a customer, the guest's
rows are added into the customer's. `rebuild` recomputes every row from the facts with the
same rules, in SQL, and reports where the incrementally kept rows differ.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from typing import cast as cast_type

from sqlalchemy import (
    Column,
    MetaData,
    Select,
    Table,
    and_,
    case,
    cast,
    delete,
    except_,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    union,
    union_all,
    update,
)
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from returnstack.kit.bulk import upsert_rows_returning
from returnstack.kit.errors import ValidationFailed
from returnstack.kit.types import MAX_SAFE_INTEGER
from returnstack.models import CustomerEmail, CustomerProfile, Order, OrderLine, Return, ReturnItem
from returnstack.models.base import UTCDateTime
from returnstack.outbox.service import DomainEvent
from returnstack.outbox.service import record as record_domain_events
from returnstack.returns.policy import SerialReturner, get_policy

COUNTERS = (
    "orders",
    "items_purchased",
    "gross_revenue",
    "returns",
    "items_returned",
    "refunded",
    "online_orders",
    "offline_orders",
    "online_returns",
    "offline_returns",
)
SUMS = (*COUNTERS, "net_revenue")  # every stored sum, each within +-(2^53 - 1)
SERIAL_RETURNER = "serial_returner"
PROFILES = cast_type(Table, CustomerProfile.__table__)


def customer_owner(customer_id: str) -> str:
    return f"c:{customer_id}"


def guest_owner(email: str) -> str:
    return f"g:{email}"


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
        links = linked_customers(self.session, self.tenant_id, alone)
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


def linked_customers(
    session: Session, tenant_id: str, emails: Iterable[str]
) -> dict[str, str | None]:
    """The customer each email is linked to (None for a guest email, or one never seen)."""
    wanted = sorted(set(emails))
    if not wanted:
        return {}
    # FOR SHARE: a link being made meanwhile either commits first (and is read here) or
    # waits until this transaction has written its guest rows (and then merges them).
    query = (
        select(CustomerEmail.email, CustomerEmail.customer_id)
        .where(CustomerEmail.tenant_id == tenant_id, CustomerEmail.email.in_(wanted))
        .with_for_update(read=True)
    )
    links: dict[str, str | None] = dict.fromkeys(wanted)
    links.update({email: customer_id for email, customer_id in session.execute(query)})
    return links


def _rate(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator > 0 else 0.0


def _sql_rate(numerator: str, denominator: str) -> str:
    # The same IEEE division as `_rate` (and as `rebuild`), so all three agree exactly.
    return (
        f"CASE WHEN ({denominator}) > 0 THEN CAST(({numerator}) AS DOUBLE PRECISION) / "
        f"({denominator}) ELSE 0.0 END"
    )


def _sum(column: str) -> str:
    return f"customer_profiles.{column} + excluded.{column}"


def _pick(column: str, keep_old_when: str) -> str:
    old, new = f"customer_profiles.{column}", f"excluded.{column}"
    return (
        f"CASE WHEN {new} IS NULL OR ({old} IS NOT NULL AND {old} {keep_old_when} {new}) "
        f"THEN {old} ELSE {new} END"
    )


UPSERT = (
    "ON CONFLICT (tenant_id, owner, currency) DO UPDATE SET "
    + ", ".join(f"{name} = {_sum(name)}" for name in (*COUNTERS, "net_revenue"))
    + f", return_rate_items = {_sql_rate(_sum('items_returned'), _sum('items_purchased'))}"
    + f", return_rate_value = {_sql_rate(_sum('refunded'), _sum('gross_revenue'))}"
    + f", first_order_at = {_pick('first_order_at', '<=')}"
    + f", last_order_at = {_pick('last_order_at', '>=')}"
    + f", last_return_at = {_pick('last_return_at', '>=')}"
)


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
    returned = upsert_rows_returning(
        session,
        CustomerProfile,
        values,
        on_conflict=UPSERT,
        returning=("owner", "currency", "orders", "return_rate_value", "serial_returner", *SUMS),
    )
    rule = get_policy(session, tenant_id=tenant_id).serial_returner
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
        session.execute(
            update(CustomerProfile)
            .where(
                CustomerProfile.tenant_id == tenant_id,
                CustomerProfile.owner == owner,
                CustomerProfile.currency == currency,
            )
            .values(serial_returner=flagged)
        )
        by_owner.setdefault((flagged, owner), []).append(currency)
    if not by_owner:
        return
    from returnstack.customers.render import render_owner  # render reads these rows

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
    guests = session.scalars(
        select(CustomerProfile)
        .where(CustomerProfile.tenant_id == tenant_id, CustomerProfile.owner.in_(sorted(owners)))
        .with_for_update()
    ).all()
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
    session.execute(
        delete(CustomerProfile).where(
            CustomerProfile.tenant_id == tenant_id,
            CustomerProfile.owner.in_(sorted({guest.owner for guest in guests})),
        )
    )
    _upsert(session, tenant_id, rows)


def reevaluate_flags(session: Session, *, tenant_id: str) -> None:
    """After a policy change: set and clear the serial returner flag of every row."""
    rule = get_policy(session, tenant_id=tenant_id).serial_returner
    should = and_(
        CustomerProfile.orders >= rule.min_orders,
        CustomerProfile.return_rate_value >= rule.return_rate_value,
    )
    rows = session.execute(
        select(CustomerProfile.owner, CustomerProfile.currency, should).where(
            CustomerProfile.tenant_id == tenant_id,
            CustomerProfile.serial_returner != should,
        )
    ).all()
    _set_flags(
        session, tenant_id, [(owner, currency, bool(flag)) for owner, currency, flag in rows]
    )


# --- rebuild -------------------------------------------------------------------------


@dataclass
class RebuildReport:
    tenant_id: str
    profiles: int  # rows after the rebuild
    differences: int  # (owner, currency) rows that were missing, extra or different
    examples: list[dict[str, Any]]  # a few of them: owner, currency, field: [kept, rebuilt]
    written: bool


_COMPARED = (
    "owner",
    "currency",
    "customer_id",
    "guest_email",
    *COUNTERS,
    "net_revenue",
    "return_rate_items",
    "return_rate_value",
    "first_order_at",
    "last_order_at",
    "last_return_at",
    "serial_returner",
)


def _owner_columns(
    customer_id: Any, email: Any, linked: Any
) -> tuple[ColumnElement[Any], ColumnElement[Any], ColumnElement[Any]]:
    """(owner, customer_id, guest_email) of a fact, as `ProfileChanges.apply` decides them."""
    owner_id = func.coalesce(customer_id, linked)
    owner = case(
        (owner_id.is_not(None), literal("c:") + owner_id),
        else_=literal("g:") + email,
    )
    guest = case((owner_id.is_(None), email), else_=null())
    return owner, owner_id, guest


def _facts(tenant_id: str) -> Select[Any]:
    """Every fact's contribution, one row per order and per return (UNION ALL)."""
    lines = (
        select(
            OrderLine.order_id,
            func.sum(OrderLine.quantity).label("units"),
            func.sum(OrderLine.quantity * OrderLine.unit_price).label("gross"),
        )
        .where(OrderLine.tenant_id == tenant_id)
        .group_by(OrderLine.order_id)
        .subquery()
    )
    order_link = CustomerEmail.__table__.alias("order_link")
    owner, owner_id, guest = _owner_columns(
        Order.customer_id, Order.email, order_link.c.customer_id
    )
    no_time = cast(null(), UTCDateTime)
    orders = (
        select(
            owner.label("owner"),
            Order.currency.label("currency"),
            owner_id.label("customer_id"),
            guest.label("guest_email"),
            literal(1).label("orders"),
            func.coalesce(lines.c.units, 0).label("items_purchased"),
            func.coalesce(lines.c.gross, 0).label("gross_revenue"),
            literal(0).label("returns"),
            literal(0).label("items_returned"),
            literal(0).label("refunded"),
            case((Order.channel == "online", 1), else_=0).label("online_orders"),
            case((Order.channel == "offline", 1), else_=0).label("offline_orders"),
            literal(0).label("online_returns"),
            literal(0).label("offline_returns"),
            Order.placed_at.label("first_order_at"),
            Order.placed_at.label("last_order_at"),
            no_time.label("last_return_at"),
        )
        .select_from(Order)
        .outerjoin(lines, lines.c.order_id == Order.id)
        .outerjoin(
            order_link,
            and_(order_link.c.tenant_id == Order.tenant_id, order_link.c.email == Order.email),
        )
        .where(
            Order.tenant_id == tenant_id,
            or_(Order.customer_id.is_not(None), Order.email.is_not(None)),
        )
    )
    units = (
        select(ReturnItem.return_id, func.sum(ReturnItem.received_quantity).label("units"))
        .where(ReturnItem.tenant_id == tenant_id)
        .group_by(ReturnItem.return_id)
        .subquery()
    )
    return_link = CustomerEmail.__table__.alias("return_link")
    owner, owner_id, guest = _owner_columns(
        Return.customer_id, Return.email, return_link.c.customer_id
    )
    counted = func.coalesce(units.c.units, 0) > 0
    returns = (
        select(
            owner,
            Return.currency,
            owner_id,
            guest,
            literal(0),
            literal(0),
            literal(0),
            case((counted, 1), else_=0),
            func.coalesce(units.c.units, 0),
            func.coalesce(Return.refund_amount, 0),
            literal(0),
            literal(0),
            case((and_(counted, Return.channel == "online"), 1), else_=0),
            case((and_(counted, Return.channel == "offline"), 1), else_=0),
            no_time,
            no_time,
            case((counted, Return.created_at), else_=no_time),
        )
        .select_from(Return)
        .outerjoin(units, units.c.return_id == Return.id)
        .outerjoin(
            return_link,
            and_(return_link.c.tenant_id == Return.tenant_id, return_link.c.email == Return.email),
        )
        .where(
            Return.tenant_id == tenant_id,
            or_(Return.customer_id.is_not(None), Return.email.is_not(None)),
            # Nothing back and nothing refunded: nothing to count. (Money back without
            # goods, COMPAT.md Optimove refunds, counts its refund and no return.)
            or_(counted, func.coalesce(Return.refund_amount, 0) > 0),
        )
    )
    return union_all(orders, returns)  # type: ignore[return-value]


def _rebuilt(tenant_id: str, rule: SerialReturner) -> Select[Any]:
    facts = _facts(tenant_id).subquery("facts")
    sums = {name: func.sum(facts.c[name]) for name in COUNTERS}

    def rate(numerator: ColumnElement[Any], denominator: ColumnElement[Any]) -> Any:
        return case(
            (
                denominator > 0,
                cast(numerator, CustomerProfile.return_rate_value.type) / denominator,
            ),
            else_=literal(0.0),
        )

    rate_value = rate(sums["refunded"], sums["gross_revenue"])
    return select(
        facts.c.owner,
        facts.c.currency,
        func.max(facts.c.customer_id).label("customer_id"),
        func.max(facts.c.guest_email).label("guest_email"),
        *(total.label(name) for name, total in sums.items()),
        (sums["gross_revenue"] - sums["refunded"]).label("net_revenue"),
        rate(sums["items_returned"], sums["items_purchased"]).label("return_rate_items"),
        rate_value.label("return_rate_value"),
        func.min(facts.c.first_order_at).label("first_order_at"),
        func.max(facts.c.last_order_at).label("last_order_at"),
        func.max(facts.c.last_return_at).label("last_return_at"),
        and_(sums["orders"] >= rule.min_orders, rate_value >= rule.return_rate_value).label(
            "serial_returner"
        ),
    ).group_by(facts.c.owner, facts.c.currency)


def rebuild(
    session: Session, *, tenant_id: str, write: bool = True, examples: int = 10
) -> RebuildReport:
    """Recompute the tenant's profiles from the facts, report how the kept ones differ, and
    (with `write`) replace them. Runs in the caller's transaction, which it must commit."""
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        # Writers of profile rows wait until this transaction ends, and their facts either
        # are in what is read below or will be added onto the rebuilt rows.
        session.execute(select(literal(1)))  # nothing, but begins the transaction
        connection.exec_driver_sql("LOCK TABLE customer_profiles IN SHARE ROW EXCLUSIVE MODE")
    rule = get_policy(session, tenant_id=tenant_id).serial_returner
    scratch = Table(
        "rebuilt_profiles",
        MetaData(),
        *(Column(column.name, column.type) for column in CustomerProfile.__table__.columns),
        prefixes=["TEMPORARY"],
    )
    scratch.drop(connection, checkfirst=True)
    scratch.create(connection)
    try:
        rebuilt = _rebuilt(tenant_id, rule).subquery("rebuilt")
        connection.execute(
            insert(scratch).from_select(
                ["tenant_id", *_COMPARED],
                select(literal(tenant_id), *(rebuilt.c[name] for name in _COMPARED)),
            )
        )
        new = select(*(scratch.c[name] for name in _COMPARED))
        kept = select(*(PROFILES.c[name] for name in _COMPARED)).where(
            CustomerProfile.tenant_id == tenant_id
        )
        only_new = except_(new, kept).subquery("only_new")
        only_kept = except_(kept, new).subquery("only_kept")
        differing = union(
            select(only_new.c.owner, only_new.c.currency),
            select(only_kept.c.owner, only_kept.c.currency),
        ).subquery("differing")
        count = connection.execute(select(func.count()).select_from(differing)).scalar_one()
        keys = connection.execute(
            select(differing.c.owner, differing.c.currency)
            .order_by(differing.c.owner, differing.c.currency)
            .limit(examples)
        ).all()
        samples = [
            _difference(connection, scratch, tenant_id, owner, currency) for owner, currency in keys
        ]
        profiles = connection.execute(select(func.count()).select_from(scratch)).scalar_one()
        if write and count:
            session.execute(delete(CustomerProfile).where(CustomerProfile.tenant_id == tenant_id))
            connection.execute(
                insert(PROFILES).from_select(
                    ["tenant_id", *_COMPARED], select(scratch.c["tenant_id"], *new.selected_columns)
                )
            )
    finally:
        scratch.drop(connection)
    return RebuildReport(
        tenant_id=tenant_id,
        profiles=profiles,
        differences=count,
        examples=samples,
        written=bool(write and count),
    )


def _difference(
    connection: Any, scratch: Table, tenant_id: str, owner: str, currency: str
) -> dict[str, Any]:
    def row(table: Any, *where: Any) -> dict[str, Any] | None:
        found = connection.execute(
            select(*(table.c[name] for name in _COMPARED)).where(
                table.c.owner == owner, table.c.currency == currency, *where
            )
        ).first()
        return None if found is None else dict(found._mapping)

    kept = row(PROFILES, CustomerProfile.tenant_id == tenant_id) or {}
    new = row(scratch) or {}
    fields_differing = {
        name: [_plain(kept.get(name)), _plain(new.get(name))]
        for name in _COMPARED[2:]
        if kept.get(name) != new.get(name)
    }
    return {
        "owner": owner,
        "currency": currency,
        "kept": bool(kept),
        "rebuilt": bool(new),
        "fields": fields_differing,
    }


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat() if value.tzinfo else value.isoformat()
    return value
