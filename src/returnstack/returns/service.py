"""Returns: opening, checking, moving through the state machine, and recording returns
that happened elsewhere (from events)."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from fractions import Fraction
from math import ceil, floor
from typing import Any

from sqlalchemy.orm import Session

from returnstack.customers.profiles import ProfileChanges, reevaluate_flags, return_delta
from returnstack.customers.repository import linked_emails
from returnstack.customers.service import Identity
from returnstack.customers.service import remember as remember_customers
from returnstack.events.schemas import ReturnEvent
from returnstack.kit.bulk import insert_rows
from returnstack.kit.errors import (
    InvalidTransition,
    NotFound,
    ValidationFailed,
)
from returnstack.kit.ids import new_id
from returnstack.models import Return, ReturnHistory, ReturnItem
from returnstack.models.returns import ReturnStatus
from returnstack.orders.repository import store_resource
from returnstack.outbox.service import DomainEvent
from returnstack.outbox.service import record as record_domain_events
from returnstack.products import upkeep as product_signals
from returnstack.returns import repository
from returnstack.returns.eligibility import Checked, Requester, check_items
from returnstack.returns.errors import RefundExceedsRefundable, VersionMismatch
from returnstack.returns.errors import ReturnErrorCode as Code
from returnstack.returns.policy import PolicyDocument, get_policy
from returnstack.returns.reasons import normalize_free_text_reason
from returnstack.returns.render import render_return
from returnstack.returns.repository import (
    ReturnFilters,
    find_return,
    render_returns,
    save_policy_document,
)
from returnstack.returns.schemas import (
    CancelBody,
    CustomerRef,
    NoteBody,
    ReceiveBody,
    ReturnCreate,
    ReturnItemCreate,
    ReturnQuery,
    ReturnUpdate,
)
from returnstack.returns.state import TRANSITIONS, allowed_actions
from returnstack.tenants.service import next_numbers


@dataclass(frozen=True, slots=True)
class ReturnOptions:
    """How a verified return event is recorded, for vendors whose facts are not one whole
    return per event (COMPAT.md, Optimove). `adds_to`: the id of a return recorded earlier
    whose items this event continues (the vendor sends one return over several requests).
    `goods_back=False`: money back without goods (nothing comes back, nothing is claimed;
    the refund still lowers the customer's net revenue and counts for the products)."""

    adds_to: str | None = None
    goods_back: bool = True


@dataclass(frozen=True, slots=True)
class RecordedReturn:
    event_id: str
    event: ReturnEvent
    currency: str
    options: ReturnOptions = ReturnOptions()


def record_returns(
    session: Session,
    *,
    tenant_id: str,
    recorded: Sequence[RecordedReturn],
    actor: str,
    profiles: ProfileChanges,
) -> list[str]:
    """Store returns that already happened elsewhere: closed, `source: "event"`, counted as
    returned (and claimed) against their order's lines. Returns the ids of those made (an
    event that adds items to an earlier return makes none)."""
    if not recorded:
        return []
    known_reasons = frozenset(
        reason.code for reason in get_policy(session, tenant_id=tenant_id).reasons
    )
    for entry in recorded:
        if entry.options.adds_to is not None:
            _add_to_recorded(session, tenant_id, entry, actor, profiles, known_reasons)
    new = [entry for entry in recorded if entry.options.adds_to is None]
    if not new:
        return []
    now = datetime.now(UTC)
    returns, items, history, domain_events = [], [], [], []
    numbers = next_numbers(session, tenant_id=tenant_id, name="return_number", count=len(new))
    for number, entry in zip(numbers, new, strict=True):
        event = entry.event
        refund = event.refund
        ret: dict[str, Any] = {
            "tenant_id": tenant_id,
            "id": new_id("ret"),
            "number": number,
            "external_id": None,
            "status": "closed",
            "source": "event",
            "channel": event.channel,
            "store_id": event.store.id if event.store else None,
            "customer_id": event.customer.id,
            "email": event.customer.email,
            "currency": entry.currency,
            "refund_amount": refund.amount if refund else None,
            "refund_method": refund.method if refund else None,
            "refunded_at": event.timestamp if refund else None,
            "fee_restocking": 0,
            "fee_shipping": 0,
            "note": None,
            "metadata": {},
            "event_id": entry.event_id,
            "created_at": event.timestamp,
            "updated_at": now,
            "closed_at": event.timestamp,
            "version": 1,
            "claiming": entry.options.goods_back,
        }
        ret_items = _recorded_item_rows(tenant_id, ret["id"], 1, entry, known_reasons)
        entry_history = {
            "tenant_id": tenant_id,
            "return_id": ret["id"],
            "seq": 1,
            "at": event.timestamp,
            "from_status": None,
            "to_status": "closed",
            "action": "record",
            "actor": actor,
            "note": f"recorded from event {event.id}",
        }
        profiles.add(
            event.customer.id,
            event.customer.email,
            entry.currency,
            return_delta(
                channel=event.channel,
                created_at=event.timestamp,
                units_before=0,
                units_received=sum(item["received_quantity"] for item in ret_items),
                refunded=refund.amount if refund else 0,
            ),
        )
        returns.append(ret)
        items.extend(ret_items)
        history.append(entry_history)
        data = render_return(ret, ret_items, [entry_history], store=store_resource(event.store))
        domain_events.append(DomainEvent(type="return.recorded", data=data))
    insert_rows(session, Return, returns)
    insert_rows(session, ReturnItem, items)
    insert_rows(session, ReturnHistory, history)
    record_domain_events(session, tenant_id=tenant_id, events=domain_events)
    product_signals.count_recorded_returns(
        session, tenant_id=tenant_id, returns=returns, items=items
    )
    return [ret["id"] for ret in returns]


def _recorded_item_rows(
    tenant_id: str,
    return_id: str,
    first_position: int,
    entry: RecordedReturn,
    known_reasons: frozenset[str],
) -> list[dict[str, Any]]:
    """A recorded return's items: all back at once, or (money back without goods) none."""
    rows = []
    back = entry.options.goods_back
    for position, item in enumerate(entry.event.items, start=first_position):
        reason, note = normalize_free_text_reason(item.reason, item.note, known_reasons)
        rows.append(
            {
                "tenant_id": tenant_id,
                "return_id": return_id,
                "position": position,
                "order_id": entry.event.order_id,
                "line_id": item.line_id,
                "product_id": item.product_id,
                "variant_id": item.variant_id,
                "quantity": item.quantity,
                "received_quantity": item.quantity if back else 0,
                "good_quantity": item.quantity if back else 0,
                "damaged_quantity": 0,
                "reason": reason,
                "note": note,
                "resolution": "refund",
                "unit_price": item.unit_price,
                "fee_basis_points": 0,
                "outcome": "received" if back else None,
                "disposition": None,
            }
        )
    return rows


def _add_to_recorded(
    session: Session,
    tenant_id: str,
    entry: RecordedReturn,
    actor: str,
    profiles: ProfileChanges,
    known_reasons: frozenset[str],
) -> None:
    """More items of a return recorded earlier (a vendor that sends one return over several
    requests): they join it, its refund grows by the event's, and it stays closed."""
    event = entry.event
    ret = find_return(
        session, tenant_id=tenant_id, reference=entry.options.adds_to or "", for_update=True
    )
    if ret.source != "event" or ret.status != ReturnStatus.closed:
        raise ValueError(f"return {ret.id} was not recorded from events")  # the caller's bug
    old_items = repository.items_of(session, ret)
    rows = _recorded_item_rows(
        tenant_id, ret.id, max(item.position for item in old_items) + 1, entry, known_reasons
    )
    insert_rows(session, ReturnItem, rows)
    before = ret.refund_amount
    added = event.refund.amount if event.refund else 0
    if event.refund is not None:
        ret.refund_amount = (before or 0) + added
        ret.refund_method = ret.refund_method or event.refund.method
        ret.refunded_at = ret.refunded_at or event.timestamp
    ret.version += 1
    ret.updated_at = datetime.now(UTC)
    _add_history(
        session,
        ret=ret,
        action="record",
        from_status=ret.status,
        actor=actor,
        note=f"recorded from event {event.id}",
        at=event.timestamp,
    )
    profiles.add(
        ret.customer_id,
        ret.email,
        ret.currency,
        return_delta(
            channel=ret.channel,
            created_at=ret.created_at,
            units_before=sum(item.received_quantity for item in old_items),
            units_received=sum(row["received_quantity"] for row in rows),
            refunded=added,
        ),
    )
    product_signals.count_recorded_addition(
        session, ret, old_items, rows, before=before or 0, after=ret.refund_amount or 0
    )
    refund_before = None if before is None else {"amount": before, "method": ret.refund_method}
    refund_after = (
        None
        if ret.refund_amount is None
        else {"amount": ret.refund_amount, "method": ret.refund_method}
    )
    changes: dict[str, Any] = {"items": [None, [_item_change(row) for row in rows]]}
    if refund_before != refund_after:
        changes["refund"] = [refund_before, refund_after]
    _publish(session, ret=ret, event_type="return.updated", changes=changes)


def _item_change(row: dict[str, Any]) -> dict[str, Any]:
    keys = ("order_id", "line_id", "product_id", "variant_id", "quantity", "reason", "note")
    return {key: row[key] for key in keys}


# --- the return lifecycle -----------------------------------------------------------------


def _preview(checked: Checked) -> dict[str, Any]:
    return {
        "eligible": checked.eligible,
        "currency": checked.currency,
        "items": [
            {
                "index": item.index,
                "order_id": item.request.order_id,
                "line_id": item.line_id,
                "product_id": item.line["product_id"] if item.line else item.request.product_id,
                "quantity": item.request.quantity,
                "eligible": not item.errors,
                "errors": [{"code": code, "message": message} for code, message in item.errors],
                "unit_price": item.line["unit_price"] if item.line else None,
                "refundable": item.value,
                "fee": ceil(item.fee),
            }
            for item in checked.items
        ],
        "fees": {"restocking": checked.restocking_fee, "shipping": checked.shipping_fee},
        "total": checked.total,
    }


def _check(
    session: Session,
    *,
    tenant_id: str,
    requester: Requester | None,
    customer: CustomerRef | None,
    items: list[ReturnItemCreate],
    exclude_return_id: str | None = None,
) -> Checked:
    if requester is None and customer is not None:
        requester = Requester(customer_id=customer.id, email=customer.email)
    return check_items(
        session,
        tenant_id=tenant_id,
        policy=get_policy(session, tenant_id=tenant_id),
        requester=requester,
        items=items,
        exclude_return_id=exclude_return_id,
    )


def preview_return(
    session: Session, *, tenant_id: str, requester: Requester | None, data: ReturnCreate
) -> dict[str, Any]:
    """What POST /v1/returns would decide, and the money, without writing anything."""
    checked = _check(
        session, tenant_id=tenant_id, requester=requester, customer=data.customer, items=data.items
    )
    return _preview(checked)


def _item_rows(tenant_id: str, return_id: str, checked: Checked) -> list[dict[str, Any]]:
    rows = []
    for position, item in enumerate(checked.items, start=1):
        assert item.line is not None  # eligible items have their line
        rows.append(
            {
                "tenant_id": tenant_id,
                "return_id": return_id,
                "position": position,
                "order_id": item.request.order_id,
                "line_id": item.line["line_id"],
                "product_id": item.line["product_id"],
                "variant_id": item.line["variant_id"],
                "quantity": item.request.quantity,
                "received_quantity": 0,
                "good_quantity": 0,
                "damaged_quantity": 0,
                "reason": item.request.reason,
                "note": item.request.note,
                "resolution": item.request.resolution,
                "unit_price": item.line["unit_price"],
                "fee_basis_points": item.fee_basis_points,
                "outcome": None,
                "disposition": None,
            }
        )
    return rows


def _add_history(
    session: Session,
    *,
    ret: Return,
    action: str,
    from_status: str | None,
    actor: str,
    note: str | None,
    at: datetime,
) -> None:
    session.add(
        ReturnHistory(
            tenant_id=ret.tenant_id,
            return_id=ret.id,
            seq=repository.last_history_seq(session, ret) + 1,
            at=at,
            from_status=from_status,
            to_status=ret.status,
            action=action,
            actor=actor,
            note=note,
        )
    )


def _publish(
    session: Session, *, ret: Return, event_type: str, changes: dict[str, Any] | None
) -> dict[str, Any]:
    """Render the return after the change and record its domain event; returns the render."""
    session.flush()
    rendered = render_returns(session, tenant_id=ret.tenant_id, returns=[ret])[0]
    record_domain_events(
        session,
        tenant_id=ret.tenant_id,
        events=[DomainEvent(type=event_type, data=rendered, changes=changes)],
    )
    return rendered


def open_return(
    session: Session,
    *,
    tenant_id: str,
    requester: Requester | None,
    data: ReturnCreate,
    source: str,
    actor: str,
) -> dict[str, Any]:
    """Open a return in status `requested`, if every item is eligible (else 422)."""
    checked = _check(
        session, tenant_id=tenant_id, requester=requester, customer=data.customer, items=data.items
    )
    if not checked.eligible:
        raise ValidationFailed(
            "Some items cannot be returned; nothing was created.", details=checked.error_details()
        )
    assert checked.currency is not None
    if data.customer is not None and data.customer.id and data.customer.email:
        # A request naming both links them, as an event naming both does.
        remember_customers(
            session,
            tenant_id=tenant_id,
            identities=[Identity(data.customer.id, data.customer.email)],
        )
    now = datetime.now(UTC)
    (number,) = next_numbers(session, tenant_id=tenant_id, name="return_number", count=1)
    ret: dict[str, Any] = {
        "tenant_id": tenant_id,
        "id": new_id("ret"),
        "number": number,
        "external_id": data.external_id,
        "status": ReturnStatus.requested.value,
        "source": source,
        "channel": data.channel,
        "store_id": data.store.id if data.store else None,
        "customer_id": checked.customer_id,
        "email": checked.email,
        "currency": checked.currency,
        "refund_amount": None,
        "refund_method": None,
        "refunded_at": None,
        "fee_restocking": checked.restocking_fee,
        "fee_shipping": checked.shipping_fee,
        "note": data.note,
        "metadata": data.metadata or {},
        "event_id": None,
        "created_at": now,
        "updated_at": now,
        "closed_at": None,
        "version": 1,
        "claiming": True,
    }
    items = _item_rows(tenant_id, ret["id"], checked)
    history = _history_row(ret, 1, "request", None, actor, data.note, now)
    insert_rows(session, Return, [ret])
    insert_rows(session, ReturnItem, items)
    insert_rows(session, ReturnHistory, [history])
    store = repository.store_details(session, tenant_id=tenant_id, store_id=ret["store_id"])
    loaded = repository.Loaded(ret | store, items, [history], [])
    return _record(session, loaded, "return.requested", None)


def _history_row(
    ret: Mapping[str, Any],
    seq: int,
    action: str,
    from_status: str | None,
    actor: str,
    note: str | None,
    at: datetime,
) -> dict[str, Any]:
    return {
        "tenant_id": ret["tenant_id"],
        "return_id": ret["id"],
        "seq": seq,
        "at": at,
        "from_status": from_status,
        "to_status": ret["status"],
        "action": action,
        "actor": actor,
        "note": note,
    }


def _record(
    session: Session, loaded: repository.Loaded, event_type: str, changes: dict[str, Any] | None
) -> dict[str, Any]:
    """Render the return as written (no reading it back) and record its domain event."""
    rendered = loaded.render()
    record_domain_events(
        session,
        tenant_id=loaded.ret["tenant_id"],
        events=[DomainEvent(type=event_type, data=rendered, changes=changes)],
    )
    return rendered


def _check_version(version: int, if_match: int | None) -> None:
    if if_match is not None and if_match != version:
        raise VersionMismatch(current=version, given=if_match)


def _count_in_profile(
    session: Session,
    ret: Mapping[str, Any],
    *,
    units_before: int,
    units_received: int,
    refunded: int = 0,
) -> None:
    """Units coming back and money refunded count in the customer's profile."""
    profiles = ProfileChanges(session, ret["tenant_id"])
    delta = return_delta(
        channel=ret["channel"],
        created_at=ret["created_at"],
        units_before=units_before,
        units_received=units_received,
        refunded=refunded,
    )
    # Whoever gets a profile row has a record (and a server id), as if an event named them.
    identities = [Identity(ret["customer_id"], None), Identity(None, ret["email"])]
    remember_customers(
        session,
        tenant_id=ret["tenant_id"],
        identities=[who for who in identities if who.customer_id or who.email],
    )
    profiles.add(ret["customer_id"], ret["email"], ret["currency"], delta)
    profiles.apply()


def _refuse_transition(
    status: str, action: str, allowed: list[str], why: str = ""
) -> InvalidTransition:
    message = why or f"Action {action!r} is not allowed on a return in status {status!r}."
    return InvalidTransition(
        f"{message} Allowed now: {', '.join(allowed) or 'none'}.",
        details=[{"path": "status", "message": f"is {status}", "code": Code.invalid_transition}],
        extra={"current_status": status, "allowed_actions": allowed},
    )


def refundable(
    policy: PolicyDocument, ret: Mapping[str, Any], items: Sequence[Mapping[str, Any]]
) -> tuple[int, int]:
    """(refund, restocking fee) for everything received so far: the value of the units that
    came back in good order (and damaged ones, if the policy refunds them) minus their exact
    fees and the shipping fee, rounded down to the minor unit."""
    value, fees = Fraction(0), Fraction(0)
    for item in items:
        units = item["good_quantity"] + (
            item["damaged_quantity"] if policy.refund_damaged_items else 0
        )
        if units and item["unit_price"] is not None:
            item_value = item["unit_price"] * units
            value += item_value
            fees += Fraction(item_value * item["fee_basis_points"], 10_000)
    return max(0, floor(value - fees) - ret["fee_shipping"]), ceil(fees)


def default_refund(session: Session, *, tenant_id: str, reference: str) -> int:
    """What a refund without `amount` would pay now (the dashboard pre-fills it)."""
    loaded = repository.load_return(session, tenant_id=tenant_id, reference=reference)
    policy = get_policy(session, tenant_id=tenant_id)
    total, _ = refundable(policy, loaded.ret, loaded.items)
    return max(0, total - (loaded.ret["refund_amount"] or 0))


def apply_action(
    session: Session,
    *,
    tenant_id: str,
    reference: str,
    action: str,
    body: Any,
    actor: str,
    if_match: int | None = None,
    requester: Requester | None = None,
) -> dict[str, Any]:
    """Run one action of the state machine on a return: locked and read in two statements,
    checked, written (the return, changed items, a history entry), rendered as written."""
    loaded = repository.load_return(
        session, tenant_id=tenant_id, reference=reference, for_update=True
    )
    return _apply(session, loaded, reference, action, body, actor, if_match, requester)


def _apply(
    session: Session,
    loaded: repository.Loaded,
    reference: str,
    action: str,
    body: Any,
    actor: str,
    if_match: int | None,
    requester: Requester | None,
) -> dict[str, Any]:
    transition = TRANSITIONS[action]
    ret, items = loaded.ret, loaded.items
    tenant_id = ret["tenant_id"]
    if requester is not None and not requester.owns(ret["customer_id"], ret["email"]):
        raise NotFound(f"No return {reference!r}.")
    _check_version(ret["version"], if_match)
    status = ret["status"]
    received = any(item["received_quantity"] for item in items)
    allowed = allowed_actions(status=status, source=ret["source"], received_anything=received)
    if action not in allowed:
        why = ""
        if action == "cancel" and status in transition.sources:
            why = "A return cannot be cancelled once anything was received."
        elif action == "reopen" and ret["source"] == "event":
            why = "A return recorded from an event cannot be reopened."
        raise _refuse_transition(status, action, allowed, why)

    now = datetime.now(UTC)
    note = getattr(body, "note", None)
    changes: dict[str, Any] = {}
    columns: dict[str, Any] = {}  # the return's columns written
    changed_items: list[dict[str, Any]] = []
    if action == "decline":
        columns["claiming"] = False
        note = f"{body.reason}: {note}" if note else body.reason
    elif action == "cancel":
        columns["claiming"] = False
        reason = getattr(body, "reason", None)
        note = f"{reason}: {note}" if reason and note else (reason or note)
    elif action == "reopen":
        if not ret["claiming"]:
            _reclaim(session, ret, items)
        columns["claiming"] = True
        columns["closed_at"] = None
    elif action == "receive":
        changes["items"], changed_items = _receive(session, ret, items, body)
        units = sum(receipt.quantity for receipt in body.items)
        _count_in_profile(session, ret, units_before=int(received), units_received=units)
    elif action == "refund":
        # A reopened return may be refunded again: only for what was not refunded yet.
        already = ret["refund_amount"] or 0
        policy = get_policy(session, tenant_id=tenant_id)
        total, restocking_fee = refundable(policy, ret, items)
        limit = max(0, total - already)
        amount = limit if body.amount is None else body.amount
        if amount > limit:
            raise RefundExceedsRefundable(limit)
        before_refund = (
            None
            if ret["refund_amount"] is None
            else {"amount": already, "method": ret["refund_method"]}
        )
        changes["refund"] = [before_refund, {"amount": already + amount, "method": body.method}]
        product_signals.count_refund(session, ret, items, before=already, after=already + amount)
        _count_in_profile(session, ret, units_before=1, units_received=0, refunded=amount)
        columns["refund_amount"] = already + amount
        columns["refund_method"] = body.method
        columns["refunded_at"] = now
        columns["fee_restocking"] = restocking_fee  # what was charged, on what came back
    if transition.target == ReturnStatus.closed:
        columns["closed_at"] = now
    columns["status"] = transition.target.value
    columns["version"] = ret["version"] + 1
    columns["updated_at"] = now
    ret.update(columns)
    seq = loaded.history[-1]["seq"] + 1 if loaded.history else 1
    history = _history_row(ret, seq, action, status, actor, note, now)
    repository.save_action(session, loaded, columns=columns, items=changed_items, history=history)
    loaded.history.append(history)
    changes["status"] = [status, ret["status"]]
    return _record(session, loaded, transition.event_type, changes)


def _reclaim(session: Session, ret: Mapping[str, Any], items: list[dict[str, Any]]) -> None:
    """Reopening a declined or cancelled return claims its units again, if still free."""
    requests = [
        ReturnItemCreate(
            order_id=item["order_id"],
            line_id=item["line_id"],
            quantity=item["quantity"],
            reason=item["reason"],
            note=item["note"] or "reopened",
            resolution=item["resolution"],
        )
        for item in items
    ]
    checked = check_items(
        session,
        tenant_id=ret["tenant_id"],
        policy=get_policy(session, tenant_id=ret["tenant_id"]),
        requester=Requester(customer_id=ret["customer_id"], email=ret["email"]),
        items=requests,
        exclude_return_id=ret["id"],
        now=ret["created_at"],  # the window was met when it was requested
    )
    errors = [
        detail
        for detail in checked.error_details()
        if detail["code"] == Code.quantity_exceeds_returnable
    ]
    if errors:
        raise ValidationFailed(
            "Some units of this return were claimed by another return since; it cannot reopen.",
            details=errors,
        )


def _receive(
    session: Session, ret: Mapping[str, Any], items: list[dict[str, Any]], body: ReceiveBody
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The receipts applied to the items (in place): (the changes as events show them, the
    items changed)."""
    # A line may appear in several items of a return: receipts fill them in order.
    items_by_line: dict[tuple[str, str | None], list[dict[str, Any]]] = {}
    for item in items:
        items_by_line.setdefault((item["order_id"], item["line_id"]), []).append(item)
    details = []
    changed: dict[int, dict[str, Any]] = {}
    for index, receipt in enumerate(body.items):
        found = items_by_line.get((receipt.order_id, receipt.line_id))
        if not found:
            details.append(
                {
                    "path": f"items[{index}]",
                    "message": f"this return has no item for line {receipt.line_id!r} "
                    f"of order {receipt.order_id!r}",
                    "code": Code.item_not_in_return,
                }
            )
            continue
        room = sum(item["quantity"] - item["received_quantity"] for item in found)
        if receipt.quantity > room:
            details.append(
                {
                    "path": f"items[{index}].quantity",
                    "message": f"at most {room} more",
                    "code": Code.quantity_exceeds_requested,
                }
            )
            continue
        left = receipt.quantity
        for item in found:
            take = min(left, item["quantity"] - item["received_quantity"])
            if take <= 0:
                continue
            left -= take
            item["received_quantity"] += take
            product_signals.count_receipt(session, ret, item, take)
            if receipt.outcome == "received":
                item["good_quantity"] += take
            elif receipt.outcome == "damaged":
                item["damaged_quantity"] += take
            item["outcome"] = receipt.outcome  # the latest receipt's, as the API shows it
            item["disposition"] = receipt.disposition or (
                "restock" if receipt.outcome == "received" else "not_restocked"
            )
            changed[item["position"]] = item
    if details:
        raise ValidationFailed(
            "Some receipts do not match the return; nothing was received.", details=details
        )
    updated = [item for _, item in sorted(changed.items())]
    return [
        {
            "order_id": item["order_id"],
            "line_id": item["line_id"],
            "received_quantity": item["received_quantity"],
            "outcome": item["outcome"],
            "disposition": item["disposition"],
        }
        for item in updated
    ], updated


def update_return(
    session: Session,
    *,
    tenant_id: str,
    reference: str,
    data: ReturnUpdate,
    actor: str,
    if_match: int | None = None,
) -> dict[str, Any]:
    """Edit a return while it is requested; new items are checked again."""
    ret = find_return(session, tenant_id=tenant_id, reference=reference, for_update=True)
    _check_version(ret.version, if_match)
    if ret.status != ReturnStatus.requested:
        allowed = allowed_actions(
            status=ret.status,
            source=ret.source,
            received_anything=repository.received_anything(session, ret),
        )
        raise _refuse_transition(
            ret.status, "update", allowed, "A return can be edited only while it is requested."
        )
    now = datetime.now(UTC)
    changes: dict[str, Any] = {}
    fields = data.model_fields_set
    if "items" in fields and data.items is not None:
        checked = check_items(
            session,
            tenant_id=tenant_id,
            policy=get_policy(session, tenant_id=tenant_id),
            requester=Requester(customer_id=ret.customer_id, email=ret.email),
            items=data.items,
            exclude_return_id=ret.id,
        )
        if not checked.eligible:
            raise ValidationFailed(
                "Some items cannot be returned; nothing was changed.",
                details=checked.error_details(),
            )
        if checked.currency != ret.currency:
            raise ValidationFailed(
                details=[
                    {
                        "path": "items",
                        "message": f"the return is in {ret.currency}",
                        "code": Code.currency_mismatch,
                    }
                ]
            )
        repository.replace_items(session, ret, _item_rows(tenant_id, ret.id, checked))
        ret.fee_restocking = checked.restocking_fee
        ret.fee_shipping = checked.shipping_fee
        changes["items"] = [None, [item.model_dump() for item in data.items]]
    for name, attribute in (
        ("note", "note"),
        ("external_id", "external_id"),
        ("metadata", "metadata_"),
    ):
        if name in fields:
            value = getattr(data, name)
            if name == "metadata":
                value = value or {}
            changes[name] = [getattr(ret, attribute), value]
            setattr(ret, attribute, value)
    ret.version += 1
    ret.updated_at = now
    _add_history(
        session, ret=ret, action="update", from_status=ret.status, actor=actor, note=None, at=now
    )
    return _publish(session, ret=ret, event_type="return.updated", changes=changes)


def delete_return(
    session: Session, *, tenant_id: str, reference: str, actor: str, if_match: int | None = None
) -> dict[str, Any]:
    """DELETE cancels a return that has not been received, or closes a refunded or declined
    one; a return is never erased."""
    loaded = repository.load_return(
        session, tenant_id=tenant_id, reference=reference, for_update=True
    )
    status = loaded.ret["status"]
    if status in TRANSITIONS["cancel"].sources:
        action, body = "cancel", CancelBody()
    elif status in TRANSITIONS["close"].sources:
        action, body = "close", NoteBody()  # type: ignore[assignment]
    else:
        allowed = allowed_actions(
            status=status,
            source=loaded.ret["source"],
            received_anything=any(item["received_quantity"] for item in loaded.items),
        )
        raise _refuse_transition(
            status,
            "delete",
            allowed,
            f"A return in status {status!r} can be neither cancelled nor closed.",
        )
    return _apply(session, loaded, reference, action, body, actor, if_match, None)


def list_returns(
    session: Session, *, tenant_id: str, query: ReturnQuery, limit: int, cursor: str | None
) -> dict[str, Any]:
    """A page of returns, newest first: two statements (with Core), rendered from rows."""
    filters = ReturnFilters(**query.model_dump())
    if filters.matches_nothing:
        return {"data": [], "next_cursor": None}
    if filters.customer_id is not None:
        # A customer's returns include those recorded under a linked email alone (API.md 5,
        # identity), as /v1/customers/{id}/returns lists them.
        emails = linked_emails(session, tenant_id=tenant_id, customer_id=filters.customer_id)
        filters = replace(filters, guest_emails=tuple(emails))
    rows, next_cursor = repository.page_of_returns(
        session, tenant_id=tenant_id, filters=filters, limit=limit, cursor=cursor
    )
    return {
        "data": repository.render_rows(session, tenant_id, rows),
        "next_cursor": next_cursor,
    }


def get_return(session: Session, *, tenant_id: str, reference: str) -> dict[str, Any]:
    """A return as the API shows it, read in two statements."""
    return repository.load_return(session, tenant_id=tenant_id, reference=reference).render()


def put_policy(session: Session, *, tenant_id: str, policy: PolicyDocument) -> PolicyDocument:
    """Replace the tenant's policy; every profile is then flagged by its serial-returner rule."""
    document = policy.model_dump(mode="json")
    save_policy_document(session, tenant_id=tenant_id, document=document)
    reevaluate_flags(session, tenant_id=tenant_id)
    return policy
