"""The native event format of POST /v1/events (API.md section 3)."""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from returnstack.kit.types import (
    Amount,
    ClientId,
    CurrencyCode,
    Email,
    Note,
    Quantity,
    ShortText,
    Timestamp,
)

MAX_EVENTS_PER_REQUEST = 1000
MAX_ITEMS_PER_EVENT = 500

RefundMethod = Literal["original_payment", "store_credit", "gift_card", "cash", "exchange"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CustomerRef(Strict):
    id: ClientId | None = Field(None, description="The retailer's customer id.")
    email: Email | None = Field(None, description="Normalised to lower case.")
    name: Annotated[str, Field(max_length=200)] | None = None


class StoreRef(Strict):
    id: ClientId = Field(description="The store's id in the retailer's systems.")
    name: Annotated[str, Field(max_length=200)] | None = None
    city: Annotated[str, Field(max_length=200)] | None = None
    region: Annotated[str, Field(max_length=200)] | None = None
    country: Annotated[str, Field(min_length=2, max_length=2)] | None = Field(
        None, description="ISO 3166-1 alpha-2."
    )
    postal_code: Annotated[str, Field(max_length=20)] | None = None


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
    url: Annotated[str, Field(max_length=2048)] | None = None


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


class Refund(Strict):
    amount: Amount
    method: RefundMethod = "original_payment"


class _EventBase(Strict):
    id: ClientId = Field(description="The event's idempotency key: a repeat is a duplicate.")
    timestamp: Timestamp = Field(description="RFC 3339 with an offset; at most 5 minutes ahead.")
    channel: Literal["online", "offline"] = "online"
    store: StoreRef | None = Field(None, description="Required for offline events.")
    order_id: ClientId
    currency: CurrencyCode | None = Field(None, description="Defaults to the tenant's currency.")

    @model_validator(mode="after")
    def _store_for_offline(self) -> Any:
        if self.channel == "offline" and self.store is None:
            raise ValueError("store is required when channel is offline")
        return self


class PurchaseEvent(_EventBase):
    type: Literal["purchase"]
    customer: CustomerRef | None = Field(None, description="Optional: anonymous sales count too.")
    items: list[PurchaseItem] = Field(min_length=1, max_length=MAX_ITEMS_PER_EVENT)

    @model_validator(mode="after")
    def _unique_line_ids(self) -> Any:
        seen: set[str] = set()
        for position, item in enumerate(self.items, start=1):
            line_id = item.line_id or str(position)
            if line_id in seen:
                raise ValueError(f"line_id {line_id!r} appears twice in items")
            seen.add(line_id)
        return self


class ReturnEvent(_EventBase):
    type: Literal["return"]
    customer: CustomerRef
    items: list[ReturnItem] = Field(min_length=1, max_length=MAX_ITEMS_PER_EVENT)
    refund: Refund | None = None

    @model_validator(mode="after")
    def _identified_customer(self) -> Any:
        if self.customer.id is None and self.customer.email is None:
            raise ValueError("a return needs customer.id or customer.email")
        return self


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
        "(a duplicate gets the id of the event first recorded)."
    )
