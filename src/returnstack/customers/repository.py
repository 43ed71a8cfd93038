"""The customers' SQL: customers and their emails, profile rows (kept, read and rebuilt),
segmentation rows and saved segments, and what erasing a person clears."""

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, cast

from sqlalchemy import (
    Column,
    ColumnElement,
    MetaData,
    Numeric,
    Row,
    Select,
    Table,
    and_,
    bindparam,
    case,
    delete,
    except_,
    exists,
    func,
    insert,
    literal,
    literal_column,
    null,
    or_,
    select,
    type_coerce,
    union,
    union_all,
    update,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session
from sqlalchemy.sql import sqltypes
from sqlalchemy.types import String

from returnstack.customers.expressions import FIELDS, Sort
from returnstack.customers.fields import (
    COLUMNS,
    COUNTERS,
    SERIAL_RETURNER,
    SUMS,
    TIMESTAMPS,
    TOTALS,
    customer_owner,
    guest_owner,
)
from returnstack.kit.bulk import insert_rows, insert_rows_returning
from returnstack.kit.csvcells import FORMULA_STARTS
from returnstack.kit.db import Database
from returnstack.kit.pagination import after_cursor, keyset_page, keyset_rows
from returnstack.kit.timefmt import plain
from returnstack.models import (
    Attachment,
    Cart,
    Customer,
    CustomerEmail,
    CustomerProfile,
    IdempotencyKey,
    Order,
    OrderLine,
    OutboxEvent,
    Return,
    ReturnHistory,
    ReturnItem,
    Segment,
    StorefrontSession,
    WebhookDelivery,
)
from returnstack.models.base import UTCDateTime
from returnstack.orders.repository import ORDERS as ORDERS_TABLE
from returnstack.orders.repository import order_rows

PROFILES = cast(Table, CustomerProfile.__table__)
CUSTOMERS = cast(Table, Customer.__table__)
EMAILS = cast(Table, CustomerEmail.__table__)
MATCHES_PER_QUERY = 200  # LIKE conditions OR-ed in one query

# --- customers and emails ------------------------------------------------------------


def find_customer(session: Session, *, tenant_id: str, customer_id: str) -> Customer | None:
    return session.get(Customer, (tenant_id, customer_id))


def find_email(session: Session, *, tenant_id: str, email: str) -> CustomerEmail | None:
    return session.get(CustomerEmail, (tenant_id, email))


def upsert_customers(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """A customer keeps its server id; an email or name given replaces the stored one."""
    insert_rows(
        session,
        Customer,
        rows,
        on_conflict="ON CONFLICT (tenant_id, id) DO UPDATE SET "
        "email = COALESCE(excluded.email, customers.email), "
        "name = COALESCE(excluded.name, customers.name), updated_at = excluded.updated_at",
    )


def upsert_emails(session: Session, rows: Sequence[dict[str, Any]]) -> dict[str, str]:
    """An email linked to a customer stays linked to that one (the first link wins).
    Answers the guest emails linked just now: email -> customer id.

    Only a guest's row is updated (its link made), so RETURNING names the rows inserted and
    those guests. A guest is told from a new row by its own server id (a new row linked at
    once has none). A row not updated is locked all the same (PostgreSQL's ON CONFLICT DO
    UPDATE locks every conflicting row), as it was when every conflict updated it."""
    returned = insert_rows_returning(
        session,
        CustomerEmail,
        rows,
        on_conflict="ON CONFLICT (tenant_id, email) DO UPDATE SET "
        "customer_id = excluded.customer_id "
        "WHERE customer_emails.customer_id IS NULL AND excluded.customer_id IS NOT NULL",
        returning=("email", "customer_id", "server_id"),
    )
    return {
        email: customer_id
        for email, customer_id, server_id in returned
        if customer_id is not None and server_id is not None
    }


def linked_customers(
    session: Session, tenant_id: str, emails: Iterable[str]
) -> dict[str, str | None]:
    """The customer each email is linked to (None for a guest email, or one never seen)."""
    wanted = sorted(set(emails))
    if not wanted:
        return {}
    links: dict[str, str | None] = dict.fromkeys(wanted)
    rows = session.execute(_LINKED_CUSTOMERS, {"tenant_id": tenant_id, "emails": wanted})
    links.update({email: customer_id for email, customer_id in rows})
    return links


# FOR SHARE: a link being made meanwhile either commits first (and is read here) or waits
# until this transaction has written its guest rows (and then merges them). Built once (it
# runs for every new return): building it and its cache key cost more than running it.
_LINKED_CUSTOMERS = (
    select(CustomerEmail.email, CustomerEmail.customer_id)
    .where(
        CustomerEmail.tenant_id == bindparam("tenant_id"),
        CustomerEmail.email.in_(bindparam("emails", expanding=True)),
    )
    .with_for_update(read=True)
)


def linked_emails(session: Session, *, tenant_id: str, customer_id: str) -> list[str]:
    return list(
        session.scalars(
            select(CustomerEmail.email)
            .where(CustomerEmail.tenant_id == tenant_id, CustomerEmail.customer_id == customer_id)
            .order_by(CustomerEmail.email)
        )
    )


def guest_server_ids(session: Session, *, tenant_id: str, emails: Iterable[str]) -> list[str]:
    """The ids the emails had as guests (before their link), which receivers may have seen."""
    return list(
        session.scalars(
            select(CustomerEmail.server_id)
            .where(
                CustomerEmail.tenant_id == tenant_id,
                CustomerEmail.email.in_(sorted(emails)),
                CustomerEmail.server_id.is_not(None),
            )
            .order_by(CustomerEmail.server_id)
        )
    )


# --- a person as profiles show them (Core: no ORM objects on the read path) ----------------

# Rows of `identity` and `email_identity`: (kind, a, b).
RECORD, HAS_PROFILE, EMAIL, LINK = 0, 1, 2, 3


def _kind(value: int) -> Any:
    return literal_column(str(value)).label("kind")


# The statements of a lookup are built once, their values bound per call: building one
# (and its cache key) per request cost more than running it.
_RECORD = select(
    _kind(RECORD), CUSTOMERS.c.server_id.label("a"), CUSTOMERS.c.email.label("b")
).where(CUSTOMERS.c.tenant_id == bindparam("tenant_id"), CUSTOMERS.c.id == bindparam("customer_id"))
_IDENTITY = union_all(
    _RECORD,
    select(_kind(HAS_PROFILE), null(), null()).where(
        exists().where(
            PROFILES.c.tenant_id == bindparam("tenant_id"), PROFILES.c.owner == bindparam("owner")
        )
    ),
    select(_kind(EMAIL), null(), EMAILS.c.email).where(
        EMAILS.c.tenant_id == bindparam("tenant_id"),
        EMAILS.c.customer_id == bindparam("customer_id"),
    ),
).order_by(literal_column("kind"), literal_column("b"))


def identity(
    connection: Connection, *, tenant_id: str, customer_id: str
) -> tuple[Row[Any] | None, bool, list[str]]:
    """One query: the customer's record (server_id, email) or None, whether it has profile
    rows, and its linked emails in order."""
    found, profile, linked = None, False, []
    params = {
        "tenant_id": tenant_id,
        "customer_id": customer_id,
        "owner": customer_owner(customer_id),
    }
    for row in connection.execute(_IDENTITY, params):
        if row.kind == RECORD:
            found = row
        elif row.kind == HAS_PROFILE:
            profile = True
        else:
            linked.append(row.b)
    return found, profile, linked


def _email_identity() -> Any:
    link = EMAILS.alias("link")
    other = EMAILS.alias("other")
    theirs = (link.c.tenant_id == bindparam("tenant_id"), link.c.email == bindparam("email"))
    return union_all(
        select(_kind(LINK), EMAILS.c.customer_id.label("a"), EMAILS.c.server_id.label("b")).where(
            EMAILS.c.tenant_id == bindparam("tenant_id"), EMAILS.c.email == bindparam("email")
        ),
        select(_kind(RECORD), CUSTOMERS.c.server_id, CUSTOMERS.c.email)
        .select_from(
            CUSTOMERS.join(
                link,
                and_(
                    link.c.tenant_id == CUSTOMERS.c.tenant_id, link.c.customer_id == CUSTOMERS.c.id
                ),
            )
        )
        .where(*theirs),
        select(_kind(EMAIL), null(), other.c.email)
        .select_from(
            other.join(
                link,
                and_(
                    link.c.tenant_id == other.c.tenant_id,
                    link.c.customer_id == other.c.customer_id,
                ),
            )
        )
        .where(*theirs),
    ).order_by(literal_column("kind"), literal_column("b"))


_EMAIL_IDENTITY = _email_identity()


def email_identity(
    connection: Connection, *, tenant_id: str, email: str
) -> tuple[Row[Any] | None, Row[Any] | None, list[str]]:
    """One query: the email's link (a: customer id or None, b: its guest server id) or None;
    and when linked, the customer's record (a: server_id, b: email) or None and its linked
    emails in order."""
    found_link, record, linked = None, None, []
    for row in connection.execute(_EMAIL_IDENTITY, {"tenant_id": tenant_id, "email": email}):
        if row.kind == LINK:
            found_link = row
        elif row.kind == RECORD:
            record = row
        else:
            linked.append(row.b)
    return found_link, record, linked


PROFILE_VALUES = (
    "currency",
    *TOTALS,
    *(f"{channel}_{fact}" for fact in ("orders", "returns") for channel in ("online", "offline")),
    *TIMESTAMPS,
    "serial_returner",
)
_PROFILE_VALUES = select(*(PROFILES.c[name] for name in PROFILE_VALUES)).where(
    PROFILES.c.tenant_id == bindparam("tenant_id"), PROFILES.c.owner == bindparam("owner")
)


def profile_values(connection: Connection, *, tenant_id: str, owner: str) -> list[Row[Any]]:
    """The owner's profile rows (one per currency), the fields `PROFILE_VALUES` only."""
    return list(connection.execute(_PROFILE_VALUES, {"tenant_id": tenant_id, "owner": owner}))


def customer_orders(
    reader: Session | Connection,
    *,
    tenant_id: str,
    customer_id: str | None,
    emails: Sequence[str],
    limit: int,
    cursor: str | None,
) -> tuple[list[Row[Any]], str | None]:
    """Newest first: the customer's orders, and those placed under a linked email alone (a
    guest's, with no customer id: those under the emails alone); rows of
    `orders.repository.order_rows`."""
    orders = ORDERS_TABLE.c
    mine: ColumnElement[bool] = and_(orders.customer_id.is_(None), orders.email.in_(emails))
    if customer_id is not None:
        mine = or_(orders.customer_id == customer_id, mine)
    connection = reader.connection() if isinstance(reader, Session) else reader
    query = order_rows(tenant_id, and_(mine, after_cursor(orders.placed_at, orders.id, cursor)))
    return keyset_rows(connection, query, at=orders.placed_at, row_id=orders.id, limit=limit)


# --- profile rows ----------------------------------------------------------------------


def _sql_rate(numerator: str, denominator: str) -> str:
    # The same IEEE division as Python's (and as `rebuild`'s), so all three agree exactly.
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


_ADD_ONTO_ROW = (
    "ON CONFLICT (tenant_id, owner, currency) DO UPDATE SET "
    + ", ".join(f"{name} = {_sum(name)}" for name in SUMS)
    + f", return_rate_items = {_sql_rate(_sum('items_returned'), _sum('items_purchased'))}"
    + f", return_rate_value = {_sql_rate(_sum('refunded'), _sum('gross_revenue'))}"
    + f", first_order_at = {_pick('first_order_at', '<=')}"
    + f", last_order_at = {_pick('last_order_at', '>=')}"
    + f", last_return_at = {_pick('last_return_at', '>=')}"
)


def add_to_profiles(session: Session, rows: Sequence[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Insert the rows, or add them onto the stored ones (sums add, rates are recomputed,
    timestamps take the min or max). Returns, per row: owner, currency, orders,
    return_rate_value, serial_returner, then the `SUMS` as now stored."""
    return insert_rows_returning(
        session,
        CustomerProfile,
        rows,
        on_conflict=_ADD_ONTO_ROW,
        returning=("owner", "currency", "orders", "return_rate_value", "serial_returner", *SUMS),
    )


def set_flag(session: Session, *, tenant_id: str, owner: str, currency: str, flag: bool) -> None:
    session.execute(
        update(CustomerProfile)
        .where(
            CustomerProfile.tenant_id == tenant_id,
            CustomerProfile.owner == owner,
            CustomerProfile.currency == currency,
        )
        .values(serial_returner=flag)
    )


def take_profiles(session: Session, *, tenant_id: str, owners: Iterable[str]) -> list[Any]:
    """Remove the owners' rows (locked first) and return what they held."""
    rows = session.scalars(
        select(CustomerProfile)
        .where(CustomerProfile.tenant_id == tenant_id, CustomerProfile.owner.in_(sorted(owners)))
        .with_for_update()
    ).all()
    if rows:
        session.execute(
            delete(CustomerProfile).where(
                CustomerProfile.tenant_id == tenant_id,
                CustomerProfile.owner.in_(sorted({row.owner for row in rows})),
            )
        )
    return list(rows)


def flags_to_change(
    session: Session, *, tenant_id: str, min_orders: int, min_rate: float
) -> list[tuple[str, str, bool]]:
    """(owner, currency, flag) of the rows whose flag the rule would set differently."""
    should = and_(
        CustomerProfile.orders >= min_orders, CustomerProfile.return_rate_value >= min_rate
    )
    rows = session.execute(
        select(CustomerProfile.owner, CustomerProfile.currency, should).where(
            CustomerProfile.tenant_id == tenant_id,
            CustomerProfile.serial_returner != should,
        )
    )
    return [(owner, currency, bool(flag)) for owner, currency, flag in rows]


def profile_rows(session: Session, *, tenant_id: str, owner: str) -> list[CustomerProfile]:
    return list(
        session.scalars(
            select(CustomerProfile)
            .where(CustomerProfile.tenant_id == tenant_id, CustomerProfile.owner == owner)
            .execution_options(populate_existing=True)  # written around the ORM
        )
    )


def has_profile(session: Session, *, tenant_id: str, owner: str) -> bool:
    found = session.scalar(
        select(CustomerProfile.owner)
        .where(CustomerProfile.tenant_id == tenant_id, CustomerProfile.owner == owner)
        .limit(1)
    )
    return found is not None


# --- rebuild ---------------------------------------------------------------------------

_COMPARED = (
    "owner",
    "currency",
    "customer_id",
    "guest_email",
    *SUMS,
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
    no_time = sql_cast(null(), UTCDateTime)
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


def _rebuilt(tenant_id: str, min_orders: int, min_rate: float) -> Select[Any]:
    facts = _facts(tenant_id).subquery("facts")
    sums = {name: func.sum(facts.c[name]) for name in COUNTERS}

    def rate(numerator: ColumnElement[Any], denominator: ColumnElement[Any]) -> Any:
        return case(
            (
                denominator > 0,
                sql_cast(numerator, CustomerProfile.return_rate_value.type) / denominator,
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
        and_(sums["orders"] >= min_orders, rate_value >= min_rate).label("serial_returner"),
    ).group_by(facts.c.owner, facts.c.currency)


def rebuild_profiles(
    session: Session,
    *,
    tenant_id: str,
    min_orders: int,
    min_rate: float,
    write: bool,
    examples: int,
) -> tuple[int, int, list[dict[str, Any]]]:
    """Recompute the tenant's rows from the facts into a scratch table, compare them with the
    kept ones and (with `write`, when they differ) replace those. Returns the number of
    rows rebuilt, of (owner, currency) rows that differ, and up to `examples` of those."""
    connection = session.connection()
    scratch = Table(
        "rebuilt_profiles",
        MetaData(),
        *(Column(column.name, column.type) for column in PROFILES.columns),
        prefixes=["TEMPORARY"],
    )
    scratch.drop(connection, checkfirst=True)
    scratch.create(connection)
    try:
        rebuilt = _rebuilt(tenant_id, min_orders, min_rate).subquery("rebuilt")
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
    return profiles, count, samples


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
        name: [plain(kept.get(name)), plain(new.get(name))]
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


# --- segmentation ----------------------------------------------------------------------


def _profiles_joined() -> Any:
    return PROFILES.outerjoin(
        Customer.__table__,
        and_(
            Customer.tenant_id == CustomerProfile.tenant_id,
            Customer.id == CustomerProfile.customer_id,
        ),
    )


def _rows_query(tenant_id: str, condition: ColumnElement[bool]) -> Select[Any]:
    """The fields (but flags) of the rows `condition` selects, then serial_returner, owner
    and currency."""
    joined = _profiles_joined()
    values = [FIELDS[name].column.label(name) for name in COLUMNS[:-1]]
    return (
        select(*values, CustomerProfile.serial_returner, CustomerProfile.owner)
        .select_from(joined)
        .where(CustomerProfile.tenant_id == tenant_id, condition)
    )


def _sorted(query: Select[Any], sort: Sort) -> Select[Any]:
    tie = (CustomerProfile.owner.asc(), CustomerProfile.currency.asc())
    if sort.by_key:
        return query.order_by(*tie)
    column = sort.field.column
    key = column.desc() if sort.descending else column.asc()
    # (Only where a null can be: the index of net_revenue then serves both directions.)
    return query.order_by(key.nulls_last() if sort.field.nullable else key, *tie)


def _after(sort: Sort, value: Any, owner: str, currency: str) -> ColumnElement[bool]:
    """The rows that come after (value, owner, currency) in the sort order."""
    column = sort.field.column
    tie = or_(
        CustomerProfile.owner > owner,
        and_(CustomerProfile.owner == owner, CustomerProfile.currency > currency),
    )
    if sort.by_key:
        return tie
    if value is None:  # nulls come last: only later nulls follow
        return and_(column.is_(None), tie)
    beyond = column < value if sort.descending else column > value
    if not sort.field.nullable:
        return or_(beyond, and_(column == value, tie))
    return or_(beyond, and_(column == value, tie), column.is_(None))


def sorted_segment_rows(tenant_id: str, condition: ColumnElement[bool], sort: Sort) -> Select[Any]:
    """The query of every row `condition` selects, in the sort order."""
    return _sorted(_rows_query(tenant_id, condition), sort)


def segment_rows(
    session: Session,
    *,
    tenant_id: str,
    condition: ColumnElement[bool],
    sort: Sort,
    after: tuple[Any, str, str] | None,
    limit: int,
) -> list[Row[Any]]:
    """Up to `limit` rows in the sort order, after the (value, owner, currency) given."""
    query = _rows_query(tenant_id, condition)
    if after is not None:
        query = query.where(_after(sort, *after))
    return list(session.execute(_sorted(query, sort).limit(limit)))


def count_segment_rows(session: Session, *, tenant_id: str, condition: ColumnElement[bool]) -> int:
    query = _rows_query(tenant_id, condition)
    return session.scalar(select(func.count()).select_from(query.subquery())) or 0


def _cat(*parts: Any) -> ColumnElement[str]:
    text = parts[0]
    for part in parts[1:]:
        text = text.op("||")(part)
    return cast(ColumnElement[str], text)


def _rfc3339_text(column: Any, dialect: str) -> ColumnElement[str]:
    """A timestamp as `kit.timefmt.rfc3339` writes it (2026-11-02T14:03:00Z, or with .ffffff
    when it has microseconds), made by the database (null stays null)."""
    if dialect == "postgresql":
        utc = column.op("AT TIME ZONE")(literal_column("'UTC'"))
        whole = func.date_trunc("second", column) == column
        return case(
            (whole, func.to_char(utc, 'YYYY-MM-DD"T"HH24:MI:SS"Z"')),
            else_=func.to_char(utc, 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        )
    # SQLite holds UTC text as SQLAlchemy writes it: 'YYYY-MM-DD HH:MM:SS.ffffff'.
    stored = type_coerce(column, String())
    day, time_of_day = func.substr(stored, 1, 10), func.substr(stored, 12, 8)
    return case(
        (func.substr(stored, 20) == ".000000", _cat(day, "T", time_of_day, "Z")),
        else_=_cat(day, "T", func.substr(stored, 12), "Z"),
    )


def _spreadsheet_safe_text(column: Any) -> ColumnElement[str]:
    """`kit.csvcells.spreadsheet_safe`, made by the database."""
    return case(
        (func.substr(column, 1, 1).in_(FORMULA_STARTS), _cat(literal("'"), column)),
        else_=column,
    )


def _python_float_text(column: Any) -> ColumnElement[str]:
    """A double as Python's `repr` writes it (what `csv.writer` writes for a float), made by
    PostgreSQL. Its shortest round-trip text (extra_float_digits 1) has the same digits and
    the same exponent form below 1e-4 and from 1e16, but no ".0" on an integral value, and
    an exponent from 1e15 (Python writes those positionally)."""
    text = sql_cast(column, String())
    size = func.abs(column)
    positional = sql_cast(sql_cast(text, Numeric()), String())  # 1.5e+15 -> 1500000000000000
    integral = column == func.trunc(column)
    return case(
        (and_(size < 1e15, integral), _cat(text, ".0")),  # 0 -> 0.0, -0 -> -0.0
        (and_(size >= 1e15, size < 1e16, integral), _cat(positional, ".0")),
        (and_(size >= 1e15, size < 1e16), positional),
        else_=text,
    )


def _csv_query(tenant_id: str, condition: ColumnElement[bool], dialect: str) -> Select[Any]:
    """The export's rows as CSV cells, every one made by the database (text made
    spreadsheet-safe, timestamps as RFC 3339 text, the flag as its name; on PostgreSQL the
    rates as Python writes them too, a missing cell null; on SQLite an empty string), in
    `COLUMNS` order."""
    cells: list[ColumnElement[Any]] = []
    for name in COLUMNS[:-1]:
        column = FIELDS[name].column
        if name in TIMESTAMPS:
            cell = _rfc3339_text(column, dialect)
        elif name in ("customer_id", "email"):
            cell = _spreadsheet_safe_text(column)
        elif name.startswith("return_rate_") and dialect == "postgresql":
            cell = _python_float_text(column)
        else:
            cell = cast(ColumnElement[Any], column)
        if dialect == "sqlite" and FIELDS[name].nullable:
            cell = func.coalesce(cell, "")  # written as it is: empty, as csv.writer writes None
        cells.append(cell.label(name))
    flag: ColumnElement[Any] = case((CustomerProfile.serial_returner, literal(SERIAL_RETURNER)))
    if dialect == "sqlite":
        flag = func.coalesce(flag, "")
    return (
        select(*cells, flag.label("flags"))
        .select_from(_profiles_joined())
        .where(CustomerProfile.tenant_id == tenant_id, condition)
    )


def _driver_statement(connection: Connection, query: Select[Any]) -> tuple[str, Any]:
    """`query` as the driver's SQL and parameters (processed as SQLAlchemy would bind them)."""
    compiled = cast(
        Any, query.compile(dialect=connection.dialect, compile_kwargs={"render_postcompile": True})
    )
    params = compiled.construct_params()
    for name, process in compiled._bind_processors.items():
        params[name] = process(params[name])
    if compiled.positiontup is not None:
        return compiled.string, tuple(params[name] for name in compiled.positiontup)
    return compiled.string, params


def export_csv_rows(
    db: Database, *, tenant_id: str, condition: ColumnElement[bool], sort: Sort, batch: int
) -> Iterator[Any]:
    """The export's rows in a read transaction of its own, every cell made by the database
    (`_csv_query`). PostgreSQL: CSV lines (bytes, each ending with a newline) written by
    `COPY ... TO STDOUT (FORMAT csv)`, one per row as the server sends them. SQLite: lists of
    up to `batch` rows of cells (tuples), read by the driver's own cursor."""
    with db.transaction(write=False) as session:
        connection = session.connection()
        dialect = connection.dialect.name
        sql, params = _driver_statement(
            connection, _sorted(_csv_query(tenant_id, condition, dialect), sort)
        )
        driver: Any = connection.connection.driver_connection
        if dialect == "postgresql":
            # Floats in their shortest round-trip text, whatever the server's default. (COPY
            # plans its query to read every row, as a cursor would not.)
            connection.exec_driver_sql("SET LOCAL extra_float_digits = 1")
            with (
                driver.cursor() as cursor,
                cursor.copy(f"COPY ({sql}) TO STDOUT (FORMAT csv)", params) as copy,
            ):
                while line := copy.read():
                    yield line
            return
        cursor = driver.cursor()
        try:
            cursor.execute(sql, params)
            while rows := cursor.fetchmany(batch):
                yield rows
        finally:
            cursor.close()


# --- saved segments --------------------------------------------------------------------


def find_segment(session: Session, *, tenant_id: str, segment_id: str) -> Segment | None:
    if "\x00" in segment_id:
        return None
    return session.scalar(
        select(Segment).where(Segment.tenant_id == tenant_id, Segment.id == segment_id)
    )


def list_segments(
    session: Session, *, tenant_id: str, limit: int, cursor: str | None
) -> tuple[list[Segment], str | None]:
    """Newest first."""
    query = select(Segment).where(Segment.tenant_id == tenant_id)
    return keyset_page(
        session, query, at=Segment.created_at, row_id=Segment.id, limit=limit, cursor=cursor
    )


def segments_of(session: Session, *, tenant_id: str) -> list[Segment]:
    return list(session.scalars(select(Segment).where(Segment.tenant_id == tenant_id)))


# --- erasure ---------------------------------------------------------------------------


def lines_naming(session: Session, *, tenant_id: str, emails: Sequence[str]) -> list[OrderLine]:
    """Order lines of the tenant (anyone's) whose free text (name, url) holds one of the
    emails, in any case. No index helps a substring: this reads all the tenant's lines (a
    range of the primary key), once per erasure."""
    if not emails:
        return []
    found = [
        func.lower(column).contains(email, autoescape=True)
        for column in (OrderLine.name, OrderLine.url)
        for email in emails
    ]
    query = select(OrderLine).where(OrderLine.tenant_id == tenant_id, or_(*found))
    return list(session.scalars(query))


def email_seen(session: Session, *, tenant_id: str, email: str) -> bool:
    """On an order, a return or a cart, or as a guest's profile."""
    for model in (Order, Return, Cart):
        found = session.scalar(
            select(model.tenant_id)
            .where(model.tenant_id == tenant_id, model.email == email)
            .limit(1)
        )
        if found is not None:
            return True
    return has_profile(session, tenant_id=tenant_id, owner=guest_owner(email))


def _theirs(
    model: type[Order] | type[Return], tenant_id: str, customer_id: str | None, emails: list[str]
) -> ColumnElement[bool]:
    mine: ColumnElement[bool] = model.email.in_(emails)
    if customer_id is not None:
        mine = or_(model.customer_id == customer_id, mine)
    return and_(model.tenant_id == tenant_id, mine)


def their_return_ids(
    session: Session, *, tenant_id: str, customer_id: str | None, emails: list[str]
) -> list[str]:
    return list(
        session.scalars(select(Return.id).where(_theirs(Return, tenant_id, customer_id, emails)))
    )


def forget_person(
    session: Session,
    *,
    tenant_id: str,
    customer_id: str | None,
    emails: list[str],
    owners: list[str],
) -> None:
    """Their id and emails off orders and returns, their sessions, carts, profile rows,
    customer record and email links gone."""
    # A fact of another customer that used one of these emails keeps that customer's id.
    for model in (Order, Return):
        values: dict[str, Any] = {"email": None}
        if customer_id is not None:
            values["customer_id"] = func.nullif(model.customer_id, customer_id)
        session.execute(
            update(model)
            .where(_theirs(model, tenant_id, customer_id, emails))
            .values(**values)
            .execution_options(synchronize_session=False)
        )
    sessions: ColumnElement[bool] = StorefrontSession.email.in_(emails)
    links: ColumnElement[bool] = CustomerEmail.email.in_(emails)
    if customer_id is not None:
        sessions = or_(StorefrontSession.customer_id == customer_id, sessions)
        links = or_(CustomerEmail.customer_id == customer_id, links)
    session.execute(
        delete(StorefrontSession).where(StorefrontSession.tenant_id == tenant_id, sessions)
    )
    session.execute(delete(Cart).where(Cart.tenant_id == tenant_id, Cart.email.in_(emails)))
    session.execute(
        delete(CustomerProfile).where(
            CustomerProfile.tenant_id == tenant_id, CustomerProfile.owner.in_(owners)
        )
    )
    if customer_id is not None:
        session.execute(
            delete(Customer).where(Customer.tenant_id == tenant_id, Customer.id == customer_id)
        )
    session.execute(delete(CustomerEmail).where(CustomerEmail.tenant_id == tenant_id, links))
    # Another customer whose latest email was one of these no longer shows it.
    session.execute(
        update(Customer)
        .where(Customer.tenant_id == tenant_id, Customer.email.in_(emails))
        .values(email=None)
        .execution_options(synchronize_session=False)
    )


def wipe_returns(
    session: Session, *, tenant_id: str, return_ids: list[str], actor: str | None, anonymous: str
) -> list[str]:
    """Notes and metadata of the returns gone, `actor` in their history becomes `anonymous`,
    their attachments deleted: returns the storage keys of those."""
    session.execute(
        update(Return)
        .where(Return.tenant_id == tenant_id, Return.id.in_(return_ids))
        .values(note=None, metadata_={})
        .execution_options(synchronize_session=False)
    )
    session.execute(
        update(ReturnItem)
        .where(ReturnItem.tenant_id == tenant_id, ReturnItem.return_id.in_(return_ids))
        .values(note=None)
    )
    history = and_(ReturnHistory.tenant_id == tenant_id, ReturnHistory.return_id.in_(return_ids))
    session.execute(update(ReturnHistory).where(history).values(note=None))
    if actor is not None:
        session.execute(
            update(ReturnHistory)
            .where(history, ReturnHistory.actor == actor)
            .values(actor=anonymous)
        )
    return list(
        session.scalars(
            delete(Attachment)
            .where(Attachment.tenant_id == tenant_id, Attachment.return_id.in_(return_ids))
            .returning(Attachment.storage_key)
        )
    )


def replays(session: Session, *, tenant_id: str) -> Iterator[Row[str, str, bytes]]:
    """(scope, key, response_body) of every stored idempotency replay, read in batches."""
    query = select(IdempotencyKey.scope, IdempotencyKey.key, IdempotencyKey.response_body)
    yield from session.execute(
        query.where(IdempotencyKey.tenant_id == tenant_id).execution_options(yield_per=1000)
    )


def delete_replays(session: Session, *, tenant_id: str, keys: list[tuple[str, str]]) -> None:
    for scope, key in keys:
        session.execute(
            delete(IdempotencyKey).where(
                IdempotencyKey.tenant_id == tenant_id,
                IdempotencyKey.scope == scope,
                IdempotencyKey.key == key,
            )
        )


def _containing(
    text: Any, needles: Iterable[str], emails: Iterable[str]
) -> list[ColumnElement[bool]]:
    """Conditions: the text holds a needle as it is, or an email in any case."""
    found = [text.contains(needle, autoescape=True) for needle in needles]
    return found + [func.lower(text).contains(email, autoescape=True) for email in emails]


def _in_chunks(conditions: list[ColumnElement[bool]]) -> Iterator[ColumnElement[bool]]:
    # SQLite refuses an expression over 1,000 levels deep (a person with hundreds of returns
    # would make one).
    for start in range(0, len(conditions), MATCHES_PER_QUERY):
        yield or_(*conditions[start : start + MATCHES_PER_QUERY])


def outbox_events_naming(
    session: Session, *, tenant_id: str, needles: list[str], emails: Iterable[str]
) -> list[OutboxEvent]:
    """The outbox events whose data or changes hold a needle (JSON text) or an email."""
    found: list[ColumnElement[bool]] = []
    for column in (OutboxEvent.data, OutboxEvent.changes):
        found += _containing(func.cast(column, sqltypes.Text), needles, emails)
    rows = {
        row.id: row
        for matching in _in_chunks(found)
        for row in session.scalars(
            select(OutboxEvent).where(OutboxEvent.tenant_id == tenant_id, matching)
        )
    }
    return list(rows.values())


def deliveries_naming(
    session: Session, *, tenant_id: str, needles: list[str], emails: Iterable[str]
) -> dict[str, str | None]:
    """The response snippets (by delivery id) that hold a needle or an email."""
    found = _containing(WebhookDelivery.response_body, needles, emails)
    return {
        delivery_id: body
        for matching in _in_chunks(found)
        for delivery_id, body in session.execute(
            select(WebhookDelivery.id, WebhookDelivery.response_body).where(
                WebhookDelivery.tenant_id == tenant_id, matching
            )
        )
    }


def clear_delivery_responses(session: Session, *, tenant_id: str, ids: list[str]) -> None:
    for start in range(0, len(ids), 500):
        session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.tenant_id == tenant_id,
                WebhookDelivery.id.in_(ids[start : start + 500]),
            )
            .values(response_body=None)
        )
