"""Eligibility of requested items and the money a refund would pay.

Every check is made per item against the tenant's policy, with the order rows locked (FOR
UPDATE on PostgreSQL; SQLite writers already hold the database's write lock), so concurrent
requests cannot both claim the last unit of a line.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from math import ceil, floor
from typing import Any

from sqlalchemy.orm import Session

from returnstack.customers.repository import linked_customers
from returnstack.kit.types import MAX_SAFE_INTEGER
from returnstack.models import Order
from returnstack.orders.repository import lock_orders
from returnstack.orders.service import render_orders
from returnstack.returns.errors import ReturnErrorCode as Code
from returnstack.returns.policy import PolicyDocument, terms_for
from returnstack.returns.schemas import ReturnItemCreate


@dataclass(frozen=True, slots=True)
class Requester:
    """Who asks: staff acting for a customer, a signed-in customer, or a guest."""

    customer_id: str | None
    email: str | None
    storefront: bool = False  # storefront callers never learn that an order exists

    def owns(self, customer_id: str | None, email: str | None) -> bool:
        """Whether an order or return with this customer id and email is a storefront
        caller's: a customer owns rows with their id, and rows with their email but no
        customer id (guest purchases); a guest only rows with their email and no customer
        account (API.md 4.1). (Staff requests follow the identity links: `_staff_ownership`.)"""
        if self.customer_id is not None:
            if customer_id == self.customer_id:
                return True
            return customer_id is None and self.email is not None and email == self.email
        if self.storefront and customer_id is not None:
            return False
        return self.email is not None and email == self.email


@dataclass
class CheckedItem:
    index: int
    request: ReturnItemCreate
    order: dict[str, Any] | None = None
    line: dict[str, Any] | None = None
    fee_basis_points: int = 0
    errors: list[tuple[Code, str]] = field(default_factory=list)  # (code, message)

    def refuse(self, code: Code, message: str) -> None:
        self.errors.append((code, message))

    @property
    def line_id(self) -> str | None:
        return self.line["line_id"] if self.line else self.request.line_id

    @property
    def value(self) -> int:
        return self.line["unit_price"] * self.request.quantity if self.line else 0

    @property
    def fee(self) -> Fraction:
        return Fraction(self.value * self.fee_basis_points, 10_000)


@dataclass
class Checked:
    items: list[CheckedItem]
    currency: str | None
    customer_id: str | None
    email: str | None
    shipping_fee: int

    @property
    def eligible(self) -> bool:
        return all(not item.errors for item in self.items)

    @property
    def _eligible_items(self) -> list[CheckedItem]:
        # The money counts the items that can be returned, even when others cannot.
        return [item for item in self.items if not item.errors]

    @property
    def restocking_fee(self) -> int:
        # Fees are exact; what is shown is what the floor of the refund leaves out.
        return ceil(sum((item.fee for item in self._eligible_items), Fraction(0)))

    @property
    def total(self) -> int:
        value = sum(item.value for item in self._eligible_items)
        fees = sum((item.fee for item in self._eligible_items), Fraction(0))
        return max(0, floor(value - fees) - self.shipping_fee)

    def error_details(self) -> list[dict[str, str]]:
        return [
            {"path": f"items[{item.index}]", "message": message, "code": code}
            for item in self.items
            for code, message in item.errors
        ]


def check_items(
    session: Session,
    *,
    tenant_id: str,
    policy: PolicyDocument,
    requester: Requester | None,
    items: list[ReturnItemCreate],
    exclude_return_id: str | None = None,
    now: datetime | None = None,
) -> Checked:
    """Check every item; `requester` None means staff acting for the first order's customer."""
    now = now or datetime.now(UTC)
    order_ids = sorted({item.order_id for item in items})
    rows = lock_orders(session, tenant_id=tenant_id, order_ids=order_ids)
    orders = {order.id: order for order in rows}
    if requester is None:
        first = next((orders[i.order_id] for i in items if i.order_id in orders), None)
        requester = Requester(
            customer_id=first.customer_id if first else None, email=first.email if first else None
        )
    staff_owns = (
        None if requester.storefront else _staff_ownership(session, tenant_id, requester, rows)
    )
    rendered = {
        order["order_id"]: order
        for order in render_orders(
            session, tenant_id=tenant_id, orders=rows, exclude_return_id=exclude_return_id
        )
    }
    reasons = {reason.code: reason for reason in policy.reasons}
    checked: list[CheckedItem] = []
    claimed_here: dict[tuple[str, str], int] = {}
    currency: str | None = None
    for index, request in enumerate(items):
        item = CheckedItem(index=index, request=request)
        checked.append(item)
        order = orders.get(request.order_id)
        owned = order is not None and (
            requester.owns(order.customer_id, order.email)
            if staff_owns is None
            else staff_owns(order)
        )
        if order is None or (requester.storefront and not owned):
            item.refuse(Code.order_not_found, f"No order {request.order_id!r}.")
            continue
        if not owned:
            item.refuse(
                Code.order_not_owned, f"Order {request.order_id!r} belongs to another customer."
            )
            continue
        view = rendered[order.id]
        item.order = view
        item.line = _find_line(view, request, item)
        if item.line is None:
            continue
        if currency is None:
            currency = order.currency
        elif order.currency != currency:
            item.refuse(
                Code.currency_mismatch,
                f"Order {order.id!r} is in {order.currency}, not {currency}.",
            )
        reason = reasons.get(request.reason)
        if reason is None:
            item.refuse(Code.unknown_reason, f"Unknown reason {request.reason!r}.")
        elif reason.code == "other" and not (request.note and request.note.strip()):
            item.refuse(Code.note_required, "The reason 'other' needs a note.")
        terms = terms_for(
            policy, product_id=item.line["product_id"], category=item.line["category"]
        )
        if not terms.returnable:
            item.refuse(Code.final_sale, "This product is not returnable.")
        deadline = order.placed_at + timedelta(days=terms.window_days)
        if now > deadline:
            item.refuse(
                Code.outside_return_window,
                f"The return window of {terms.window_days} days ended on "
                f"{deadline.date().isoformat()}.",
            )
        key = (order.id, item.line["line_id"])
        claimed_here[key] = claimed_here.get(key, 0) + request.quantity
        if claimed_here[key] > item.line["returnable_quantity"]:
            item.refuse(
                Code.quantity_exceeds_returnable,
                f"Only {item.line['returnable_quantity']} of line {key[1]!r} can be returned.",
            )
        merchant_fault = reason is not None and reason.merchant_fault
        item.fee_basis_points = 0 if merchant_fault else terms.fee_basis_points
    _check_total(checked)
    # Staff may name the customer by id alone: the owned orders tell the rest.
    first = next((orders[i.request.order_id] for i in checked if i.order is not None), None)
    customer_id = requester.customer_id or (first.customer_id if first else None)
    email = requester.email or (first.email if first else None)
    any_fee_bearing = any(
        item.line is not None
        and not item.errors
        and not (item.request.reason in reasons and reasons[item.request.reason].merchant_fault)
        for item in checked
    )
    return Checked(
        items=checked,
        currency=currency,
        customer_id=customer_id,
        email=email,
        shipping_fee=policy.return_shipping_fee if any_fee_bearing else 0,
    )


def _check_total(items: list[CheckedItem]) -> None:
    """A return is worth at most 2^53 - 1 (its refund and preview total are then amounts
    every JSON client reads exactly): the item that takes it past is refused."""
    total = 0
    for item in items:
        if item.errors or item.line is None:
            continue
        total += item.value
        if total > MAX_SAFE_INTEGER:
            item.refuse(
                Code.total_out_of_range,
                f"The items up to this one are worth {total}, above {MAX_SAFE_INTEGER} "
                "(2^53 - 1): return them in several returns.",
            )
            total -= item.value


def _staff_ownership(
    session: Session, tenant_id: str, requester: Requester, orders: list[Order]
) -> Callable[[Order], bool]:
    """Whether an order belongs to the person a staff request is for (API.md 4: "belongs to
    the customer (or guest email)"). An order is its customer id's; without one, the
    customer's its email is linked to; else the guest email's (the identity rule of
    profiles, API.md 5), so a customer's guest history counts as theirs and a guest email
    linked to one customer is no other's. A request naming an id and an email not linked yet
    links them (API.md 5), so it is judged with that link. Staff may take back an anonymous
    sale (a store receipt with no customer)."""
    emails = {order.email for order in orders if order.email is not None}
    if requester.email is not None:
        emails.add(requester.email)
    links = linked_customers(session, tenant_id, emails)
    if requester.customer_id is not None and requester.email is not None:
        links[requester.email] = links.get(requester.email) or requester.customer_id

    def owner(customer_id: str | None, email: str | None) -> tuple[str, str] | None:
        if customer_id is None and email is not None:
            customer_id = links.get(email)
        if customer_id is not None:
            return ("customer", customer_id)
        return None if email is None else ("guest", email)

    person = owner(requester.customer_id, requester.email)

    def owns(order: Order) -> bool:
        theirs = owner(order.customer_id, order.email)
        return theirs is None or theirs == person

    return owns


def _find_line(
    order: dict[str, Any], request: ReturnItemCreate, item: CheckedItem
) -> dict[str, Any] | None:
    lines = order["lines"]
    if request.line_id is not None:
        line = next((line for line in lines if line["line_id"] == request.line_id), None)
        if line is None:
            item.refuse(
                Code.line_not_found, f"Order {order['order_id']!r} has no line {request.line_id!r}."
            )
        elif request.product_id is not None and line["product_id"] != request.product_id:
            item.refuse(
                Code.line_not_found,
                f"Line {request.line_id!r} is not product {request.product_id!r}.",
            )
            return None
        return line
    matches = [line for line in lines if line["product_id"] == request.product_id]
    if not matches:
        item.refuse(
            Code.line_not_found,
            f"Order {order['order_id']!r} has no line of product {request.product_id!r}.",
        )
        return None
    if len(matches) > 1:
        item.refuse(
            Code.ambiguous_line,
            f"Order {order['order_id']!r} has several lines of product "
            f"{request.product_id!r}: give line_id.",
        )
        return None
    return matches[0]
