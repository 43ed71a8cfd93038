"""The native event format of POST /v1/events (API.md section 3)."""

from collections.abc import Sequence
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from returnstack.kit.schemas import Schema
from returnstack.kit.types import (
    MAX_SAFE_INTEGER,
    Amount,
    ClientId,
    CountryCode,
    CurrencyCode,
    Email,
    Name,
    Note,
    PostalCode,
    Quantity,
    ShortText,
    Timestamp,
    Url,
    line_value_error,
)
from returnstack.models.returns import Channel, RefundMethod


class Trust(StrEnum):
    """Who vouches for an event (API.md section 2). A secret key (or a vendor credential that
    proves the tenant's secret) records facts: *verified*. A publishable key is public, so
    what it sends is only *reported*: a signal kept apart, never an order, return or profile."""

    verified = "verified"
    reported = "reported"


MAX_EVENTS_PER_REQUEST = 1000
MAX_ITEMS_PER_EVENT = 500

OUT_OF_RANGE = "total_out_of_range"


class Strict(Schema):
    model_config = ConfigDict(frozen=True)


class CustomerRef(Strict):
    id: ClientId | None = Field(None, description="The retailer's customer id.")
    email: Email | None = Field(None, description="Normalised to lower case.")
    name: Name | None = None


class StoreRef(Strict):
    id: ClientId = Field(description="The store's id in the retailer's systems.")
    name: Name | None = None
    city: Name | None = None
    region: Name | None = None
    country: CountryCode | None = Field(None, description="ISO 3166-1 alpha-2.")
    postal_code: PostalCode | None = None


class PurchaseItem(Strict):
    line_id: ClientId | None = Field(
        None, description="The line's id within the order; defaults to its 1-based position."
    )
    product_id: ClientId
    variant_id: ClientId | None = None
    quantity: Quantity
    unit_price: Amount = Field(description="Minor units of the event's currency.")
    name: ShortText | None = None
    category: ShortText | None = Field(None, description="Slash-separated path: Apparel/Tops.")
    url: Url | None = None


class ReturnItem(Strict):
    line_id: ClientId | None = None
    product_id: ClientId
    variant_id: ClientId | None = None
    quantity: Quantity
    reason: ShortText | None = Field(
        None, description="A reason code; other text is kept as the note with reason 'other'."
    )
    note: Note | None = None
    unit_price: Amount | None = None


def value_errors(items: Sequence[PurchaseItem | ReturnItem]) -> list[dict[str, str]]:
    """Each line, and an event's lines in all, are worth at most 2^53 - 1 (API.md 1).
    (Checked after the model, in plain Python: a Pydantic validator per item costs more.)"""
    errors, total = [], 0
    for index, item in enumerate(items):
        if item.unit_price is None:
            continue
        error = line_value_error(item.unit_price, item.quantity)
        if error:
            errors.append({"path": f"items[{index}]", "message": error, "code": OUT_OF_RANGE})
        total += item.unit_price * item.quantity
    if not errors and total > MAX_SAFE_INTEGER:
        message = (
            f"the lines are worth {total} in all, above {MAX_SAFE_INTEGER} (2^53 - 1), "
            "the largest amount every JSON client reads exactly"
        )
        errors.append({"path": "items", "message": message, "code": OUT_OF_RANGE})
    return errors


class Refund(Strict):
    amount: Amount
    method: RefundMethod = "original_payment"


class _EventBase(Strict):
    id: ClientId = Field(description="The event's idempotency key: a repeat is a duplicate.")
    timestamp: Timestamp = Field(description="RFC 3339 with an offset; at most 5 minutes ahead.")
    channel: Channel = "online"
    store: StoreRef | None = Field(
        None, validate_default=True, description="Required for offline events."
    )
    order_id: ClientId
    currency: CurrencyCode | None = Field(None, description="Defaults to the tenant's currency.")

    @field_validator("store")
    @classmethod
    def _store_for_offline(cls, store: StoreRef | None, info: ValidationInfo) -> StoreRef | None:
        if store is None and info.data.get("channel") == "offline":
            raise ValueError("is required when channel is offline")
        return store


class PurchaseEvent(_EventBase):
    type: Literal["purchase"]
    customer: CustomerRef | None = Field(None, description="Optional: anonymous sales count too.")
    items: list[PurchaseItem] = Field(min_length=1, max_length=MAX_ITEMS_PER_EVENT)

    def duplicate_line_errors(self) -> list[dict[str, str]]:
        """Lines are keyed by line id within an order: each may appear once."""
        errors, seen = [], set()
        for position, item in enumerate(self.items, start=1):
            line_id = item.line_id or str(position)
            if line_id in seen:
                errors.append(
                    {
                        "path": f"items[{position - 1}].line_id",
                        "message": f"line_id {line_id!r} appears more than once in items",
                        "code": "duplicate_line_id",
                    }
                )
            seen.add(line_id)
        return errors


class ReturnEvent(_EventBase):
    type: Literal["return"]
    customer: CustomerRef
    items: list[ReturnItem] = Field(min_length=1, max_length=MAX_ITEMS_PER_EVENT)
    refund: Refund | None = None

    @field_validator("customer")
    @classmethod
    def _identified_customer(cls, customer: CustomerRef) -> CustomerRef:
        if customer.id is None and customer.email is None:
            raise ValueError("a return needs customer.id or customer.email")
        return customer


Event = Annotated[PurchaseEvent | ReturnEvent, Field(discriminator="type")]


class EventBatch(Strict):
    """The request body (documented here; validated event by event, see validation.py)."""

    events: list[Event] = Field(min_length=1, max_length=MAX_EVENTS_PER_REQUEST)


class RejectedEvent(BaseModel):
    index: int
    id: str | None
    errors: list[dict[str, Any]]


class EventBatchResult(BaseModel):
    accepted: int = Field(description="Events written by this request.")
    duplicates: int = Field(description="Events whose id was already recorded; nothing changed.")
    rejected: list[RejectedEvent]
    ids: list[str] = Field(
        description="Server ids of the accepted and duplicate events, in request order "
        "(a duplicate gets the id of the event first recorded with that id and trust)."
    )
