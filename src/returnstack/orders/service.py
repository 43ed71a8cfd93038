"""Orders and their lines, built from purchase events; returnable quantities."""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from returnstack.customers.profiles import ProfileChanges, lines_delta, order_delta
from returnstack.events.schemas import PurchaseEvent, StoreRef
from returnstack.kit.errors import NotFound
from returnstack.kit.timefmt import rfc3339
from returnstack.models import Order
from returnstack.orders import repository
from returnstack.orders.repository import STORE_DETAILS, store_resource
from returnstack.outbox.service import DomainEvent
from returnstack.outbox.service import record as record_domain_events
from returnstack.products import upkeep as product_signals

# What an order line shows of itself (in the API and in `purchase.recorded`).
LINE_FIELDS = ("line_id", "product_id", "variant_id", "name", "category", "quantity", "unit_price")


@dataclass(frozen=True, slots=True)
class RecordedPurchase:
    event_id: str
    event: PurchaseEvent
    currency: str


def remember_stores(session: Session, *, tenant_id: str, stores: Iterable[StoreRef]) -> None:
    """Upsert the stores named by events; details given later fill in or replace older ones."""
    now = datetime.now(UTC)
    rows: dict[str, dict[str, Any]] = {}
    for store in stores:
        row = rows.setdefault(store.id, {"tenant_id": tenant_id, "id": store.id, "updated_at": now})
        for field in STORE_DETAILS:
            value = getattr(store, field)
            if value is not None or field not in row:
                row[field] = value  # a detail given later replaces; an absent one keeps
    if not rows:
        return
    # Write only stores that are new or whose details change: an upsert locks its row until
    # commit, and every batch naming a busy store would otherwise queue behind the others.
    known = repository.store_details(session, tenant_id=tenant_id, ids=sorted(rows))
    for store_id, details in known.items():
        given = (rows[store_id][name] for name in STORE_DETAILS)
        if all(value in (None, stored) for value, stored in zip(given, details, strict=True)):
            del rows[store_id]
    repository.upsert_stores(session, [rows[key] for key in sorted(rows)])


def record_purchases(
    session: Session,
    *,
    tenant_id: str,
    purchases: Sequence[RecordedPurchase],
    profiles: ProfileChanges,
) -> None:
    """Create the orders (the first purchase of an order makes it) and their lines.

    A later purchase event for a known order adds the lines it does not have yet; lines
    already recorded are kept as they are.
    """
    if not purchases:
        return
    now = datetime.now(UTC)
    orders: list[dict[str, Any]] = []
    lines: list[dict[str, Any]] = []
    domain_events = []
    for purchase in purchases:
        event = purchase.event
        customer = event.customer
        orders.append(
            {
                "tenant_id": tenant_id,
                "id": event.order_id,
                "customer_id": customer.id if customer else None,
                "email": customer.email if customer else None,
                "channel": event.channel,
                "store_id": event.store.id if event.store else None,
                "currency": purchase.currency,
                "placed_at": event.timestamp,
                "event_id": purchase.event_id,
                "created_at": now,
            }
        )
        order_lines = []
        for position, item in enumerate(event.items, start=1):
            line: dict[str, Any] = {
                "tenant_id": tenant_id,
                "order_id": event.order_id,
                "line_id": item.line_id or str(position),
                "position": position,
                "product_id": item.product_id,
                "variant_id": item.variant_id,
                "name": item.name,
                "category": item.category,
                "url": item.url,
                "quantity": item.quantity,
                "unit_price": item.unit_price,
            }
            lines.append(line)
            order_lines.append(line)
        domain_events.append(
            DomainEvent(
                type="purchase.recorded",
                data={
                    "event_id": purchase.event_id,
                    "order_id": event.order_id,
                    "customer": {"id": customer.id, "email": customer.email} if customer else None,
                    "channel": event.channel,
                    "store": store_resource(event.store),
                    "currency": purchase.currency,
                    "placed_at": rfc3339(event.timestamp),
                    "lines": [{key: line[key] for key in LINE_FIELDS} for line in order_lines],
                },
            )
        )
    # Sorted by key, so concurrent requests lock rows in one order (no deadlocks). The sort
    # is stable: of two rows with one key, the earlier event's is the one inserted.
    orders.sort(key=itemgetter("id"))
    lines.sort(key=itemgetter("order_id", "line_id"))
    new_orders = repository.insert_new_orders(session, orders)
    # A line carries its order's time, currency, channel and store (as recorded: the first
    # event's for an order made just now, the stored ones for a known order).
    copied: dict[str, tuple[Any, ...]] = {}
    for order in orders:
        if order["id"] in new_orders and order["id"] not in copied:
            copied[order["id"]] = tuple(order[name] for name in repository.ORDER_COPIED)
    known = sorted({line["order_id"] for line in lines} - new_orders)
    if known:
        copied.update(repository.order_copied(session, tenant_id=tenant_id, order_ids=known))
    # The lines of an order made just now are all new (the first of a repeated line id
    # wins, as the database would keep it); those a later event adds to a known order may
    # exist already, and the database says which were inserted.
    new_lines: set[tuple[str, str]] = set()
    of_new_orders, of_known_orders = [], []
    for line in lines:
        line.update(zip(repository.ORDER_COPIED, copied[line["order_id"]], strict=True))
        key = (line["order_id"], line["line_id"])
        if line["order_id"] not in new_orders:
            of_known_orders.append(line)
        elif key not in new_lines:
            new_lines.add(key)
            of_new_orders.append(line)
    repository.insert_lines(session, of_new_orders)
    new_lines.update(repository.insert_new_lines(session, of_known_orders))
    record_domain_events(session, tenant_id=tenant_id, events=domain_events)
    _count_in_profiles(session, tenant_id, profiles, orders, new_orders, lines, new_lines)
    product_signals.count_new_order_lines(
        session, tenant_id=tenant_id, lines=lines, new_lines=new_lines
    )


def _count_in_profiles(
    session: Session,
    tenant_id: str,
    profiles: ProfileChanges,
    orders: list[dict[str, Any]],
    new_orders: set[str],
    lines: list[dict[str, Any]],
    new_lines: set[tuple[str, str]],
) -> None:
    """Add the new orders and lines to their customers' profiles (a line a later event
    adds to a known order counts for that order's customer and currency)."""
    owners: dict[str, tuple[str | None, str | None, str]] = {}
    for order in orders:
        if order["id"] in new_orders and order["id"] not in owners:
            owners[order["id"]] = (order["customer_id"], order["email"], order["currency"])
            profiles.add(
                order["customer_id"],
                order["email"],
                order["currency"],
                order_delta(channel=order["channel"], placed_at=order["placed_at"]),
            )
    counted: set[tuple[str, str]] = set()
    added: dict[str, list[tuple[int, int]]] = {}
    for line in lines:
        key = (line["order_id"], line["line_id"])
        if key in new_lines and key not in counted:
            counted.add(key)
            added.setdefault(line["order_id"], []).append((line["quantity"], line["unit_price"]))
    known = [order_id for order_id in added if order_id not in owners]
    if known:
        owners.update(repository.order_owners(session, tenant_id=tenant_id, order_ids=known))
    for order_id, order_lines in added.items():
        customer_id, email, currency = owners[order_id]
        profiles.add(customer_id, email, currency, lines_delta(order_lines))


def allocate_to_lines(
    lines: Sequence[Any], items: Iterable[tuple[str | None, str, str | None, int, int]]
) -> dict[str, tuple[int, int]]:
    """Spread return items over an order's lines: (claimed, returned) per line id.

    Items name a line, or only a product (recorded returns from other systems); those fill
    the lines of that product (and variant) in order, so a return recorded before its
    purchase joins the right line once the purchase arrives.
    """
    totals = {line.line_id: [0, 0] for line in lines}
    by_id = {line.line_id: line for line in lines}
    # Items that name their line take it first; product-only items fill what is left.
    ordered = sorted(items, key=lambda item: item[0] is None or item[0] not in by_id)
    for line_id, product_id, variant_id, claimed, returned in ordered:
        if line_id is not None and line_id in by_id:
            totals[line_id][0] += claimed
            totals[line_id][1] += returned
            continue
        candidates = [
            line
            for line in lines
            if line.product_id == product_id
            and (variant_id is None or line.variant_id == variant_id)
        ] or [line for line in lines if line.product_id == product_id]
        if not candidates:
            continue  # names a product this order does not have: nothing to count against
        for index, line in enumerate(candidates):
            last = index == len(candidates) - 1
            room = max(0, line.quantity - totals[line.line_id][0])
            take_claimed = claimed if last else min(claimed, room)
            take_returned = returned if last else min(returned, take_claimed)
            totals[line.line_id][0] += take_claimed
            totals[line.line_id][1] += take_returned
            claimed -= take_claimed
            returned -= take_returned
            if claimed <= 0 and returned <= 0:
                break
    return {line_id: (c, r) for line_id, (c, r) in totals.items()}


def get_order(reader: Session | Connection, *, tenant_id: str, order_id: str) -> dict[str, Any]:
    """The order as the API shows it (two queries); 404 for an order never seen."""
    connection = reader.connection() if isinstance(reader, Session) else reader
    order = repository.order_row(connection, tenant_id=tenant_id, order_id=order_id)
    if order is None:
        raise NotFound(f"No order {order_id!r}.")
    return render_orders(connection, tenant_id=tenant_id, orders=[order])[0]


def _store(order: Any, stores: dict[str, Any] | None) -> dict[str, Any] | None:
    if not order.store_id:
        return None
    if stores is None:  # a row of repository.order_rows: the store's details are on it
        if order.store_key is None:
            return None
        return {
            "id": order.store_key,
            "name": order.store_name,
            "city": order.store_city,
            "country": order.store_country,
        }
    store = stores.get(order.store_id)
    if store is None:
        return None
    return {"id": store.id, "name": store.name, "city": store.city, "country": store.country}


def render_orders(
    reader: Session | Connection,
    *,
    tenant_id: str,
    orders: Sequence[Any],
    exclude_return_id: str | None = None,
) -> list[dict[str, Any]]:
    """Orders as the API shows them, with claimed, returned and returnable quantities (plain
    dicts in the API's field order). `orders`: Order objects, or rows of
    `repository.order_rows` (which carry their store: one query fewer)."""
    if not orders:
        return []
    connection = reader.connection() if isinstance(reader, Session) else reader
    order_ids = [order.id for order in orders]
    lines_by_order: dict[str, list[Any]] = {order_id: [] for order_id in order_ids}
    # Claimed and returned units per (line, product, variant) an order's return items name.
    sums: dict[tuple[str, str | None, str, str | None], list[int]] = {}
    rows = repository.lines_and_claims(
        connection, tenant_id=tenant_id, order_ids=order_ids, exclude_return_id=exclude_return_id
    )
    for row in rows:
        if row.kind == repository.LINE:
            lines_by_order[row.order_id].append(row)
        else:  # quantity: units claimed, unit_price: units back
            key = (row.order_id, row.line_id, row.product_id, row.variant_id)
            units = sums.setdefault(key, [0, 0])
            units[0] += row.quantity or 0
            units[1] += row.unit_price or 0
    claims: dict[str, list[tuple[str | None, str, str | None, int, int]]] = {
        order_id: [] for order_id in order_ids
    }
    # In one order on every backend: by line, product, variant, absent ones first.
    for key in sorted(sums, key=lambda key: tuple((part is not None, part or "") for part in key)):
        order_id, line_id, product_id, variant_id = key
        claimed, returned = sums[key]
        claims[order_id].append((line_id, product_id, variant_id, claimed, returned))
    stores = None
    if isinstance(orders[0], Order):
        stores = repository.store_rows(
            connection, tenant_id=tenant_id, ids={order.store_id for order in orders}
        )
    rendered = []
    for order in orders:
        lines = lines_by_order[order.id]
        totals = allocate_to_lines(lines, claims[order.id])
        rendered.append(
            {
                "order_id": order.id,
                "customer": (
                    {"id": order.customer_id, "email": order.email}
                    if order.customer_id or order.email
                    else None
                ),
                "channel": order.channel,
                "store": _store(order, stores),
                "currency": order.currency,
                "placed_at": rfc3339(order.placed_at),
                "lines": [
                    {
                        "line_id": line.line_id,
                        "product_id": line.product_id,
                        "variant_id": line.variant_id,
                        "name": line.name,
                        "category": line.category,
                        "quantity": line.quantity,
                        "unit_price": line.unit_price,
                        "claimed_quantity": totals[line.line_id][0],
                        "returned_quantity": totals[line.line_id][1],
                        "returnable_quantity": max(0, line.quantity - totals[line.line_id][0]),
                    }
                    for line in lines
                ],
            }
        )
    return rendered
