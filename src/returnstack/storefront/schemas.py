"""Requests and responses of the storefront API (API.md 4.1)."""

from datetime import datetime

from pydantic import BaseModel, Field, model_validator

from returnstack.kit.schemas import ParsedText, Schema
from returnstack.kit.types import ClientId, Email
from returnstack.models.returns import Channel, ReturnStatus
from returnstack.orders.schemas import Order, OrderLine
from returnstack.returns.errors import LINE_CODES, code_list
from returnstack.returns.schemas import (
    MAX_ITEMS,
    AttachmentOut,
    CustomerOut,
    FeesOut,
    HistoryOut,
    RefundOut,
    ReturnCreate,
    ReturnItemCreate,
    StoreOut,
    StoreRef,
)

MAX_TOKEN_CHARS = 8192


class SessionCreate(Schema):
    """Either a signed customer token, or an order id and its email (a guest)."""

    customer_token: ParsedText | None = Field(
        None,
        min_length=1,
        max_length=MAX_TOKEN_CHARS,
        description="A JWT signed with HS256 and the tenant's signing secret; `sub` is the "
        "customer id, `exp` is required.",
    )
    order_id: ClientId | None = Field(None, description="Guest: an order of the guest's.")
    email: Email | None = Field(None, description="Guest: the order's email (any case).")

    @model_validator(mode="after")
    def _one_form(self) -> "SessionCreate":
        guest = self.order_id is not None or self.email is not None
        if self.customer_token is not None and guest:
            raise ValueError("give either customer_token, or order_id and email, not both")
        if self.customer_token is None and (self.order_id is None or self.email is None):
            raise ValueError("give customer_token, or both order_id and email")
        return self


class SessionOut(BaseModel):
    session: str = Field(description="Send it as X-Storefront-Session on storefront calls.")
    expires_at: datetime


class StorefrontReturnCreate(Schema):
    """The body of POST /v1/returns without `customer` (the session names the customer) and
    without the staff's fields `note`, `external_id` and `metadata` (customers write their
    notes on the items)."""

    channel: Channel = "online"
    store: StoreRef | None = None
    items: list[ReturnItemCreate] = Field(min_length=1, max_length=MAX_ITEMS)

    def as_return_create(self) -> ReturnCreate:
        return ReturnCreate.model_validate(self.model_dump(exclude_unset=True))


# --- the return as its customer sees it -----------------------------------------------------


class StorefrontReturnItem(BaseModel):
    order_id: str
    line_id: str | None
    product_id: str
    variant_id: str | None
    quantity: int
    received_quantity: int
    reason: str
    note: str | None = Field(description="The customer's note on the item.")
    resolution: str
    unit_price: int | None
    outcome: str | None = Field(
        description="How the item came back: received, damaged, wrong_item, lost_in_transit."
    )


class StorefrontHistoryEntry(HistoryOut):
    """`actor` is `merchant` for the staff's steps (whose notes are not shown), or the
    storefront caller (`storefront:customer:<id>`, `storefront:guest`)."""


class StorefrontReturn(BaseModel):
    """A return as its customer sees it: the staff's `note`, `external_id`, `metadata`, the
    items' `disposition` and who on the staff did what are left out."""

    id: str
    number: str
    status: ReturnStatus
    source: str
    channel: str
    store: StoreOut | None
    customer: CustomerOut | None
    currency: str
    items: list[StorefrontReturnItem]
    refund: RefundOut | None
    fees: FeesOut
    attachments: list[AttachmentOut]
    created_at: datetime
    updated_at: datetime
    closed_at: datetime | None
    version: int
    allowed_actions: list[str] = Field(description='`["cancel"]` or `[]`.')
    history: list[StorefrontHistoryEntry]


class StorefrontReturnPage(BaseModel):
    data: list[StorefrontReturn]
    next_cursor: str | None


class StorefrontOrderLine(OrderLine):
    ineligible: list[str] = Field(
        description="Why no unit of this line can be returned now: "
        f"{code_list(LINE_CODES)} (nothing left to return). Empty when it can be returned."
    )
    returnable_until: datetime = Field(description="End of the line's return window.")


class StorefrontOrder(Order):
    lines: list[StorefrontOrderLine]  # type: ignore[assignment]


class StorefrontOrderPage(BaseModel):
    data: list[StorefrontOrder]
    next_cursor: str | None
