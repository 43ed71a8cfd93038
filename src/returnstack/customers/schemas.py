from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints

from returnstack.customers.expressions import MAX_LENGTH
from returnstack.kit.schemas import ParsedText, Schema
from returnstack.orders.schemas import Order


class CustomerIdentity(BaseModel):
    id: str | None = Field(description="Null for a guest (an email no customer claimed).")
    email: str | None
    emails: list[str] = Field(description="Every email linked to the customer.")


class CurrencyTotals(BaseModel):
    orders: int
    items_purchased: int
    gross_revenue: int = Field(description="Minor units.")
    returns: int = Field(description="Returns with at least one unit back.")
    items_returned: int
    refunded: int = Field(description="Minor units; pending returns do not count.")
    net_revenue: int = Field(description="gross_revenue - refunded.")
    return_rate_items: float = Field(description="items_returned / items_purchased, or 0.")
    return_rate_value: float = Field(description="refunded / gross_revenue, or 0.")


class ChannelCounts(BaseModel):
    orders: int
    returns: int


class Channels(BaseModel):
    online: ChannelCounts
    offline: ChannelCounts


class CustomerProfileOut(BaseModel):
    id: str | None = Field(
        description="The server's opaque id of this customer or guest (`cus_...`), stable for "
        "its lifetime; webhooks name the customer by it (`customer.erased` carries only this). "
        "A guest whose email is linked to a customer takes the customer's id."
    )
    customer: CustomerIdentity
    first_order_at: str | None
    last_order_at: str | None
    last_return_at: str | None
    totals: dict[str, CurrencyTotals] = Field(description="Per ISO 4217 currency.")
    channels: Channels
    flags: list[str] = Field(description='e.g. ["serial_returner"]')


class OrderPage(BaseModel):
    data: list[Order]
    next_cursor: str | None


# --- segmentation and saved segments (API.md sections 5 and 11) ------------------------


class CustomerRow(BaseModel):
    customer_id: str | None = Field(description="Null for a guest (an email no customer claimed).")
    email: str | None
    currency: str
    orders: int
    items_purchased: int
    gross_revenue: int = Field(description="Minor units.")
    returns: int
    items_returned: int
    refunded: int = Field(description="Minor units.")
    net_revenue: int = Field(description="gross_revenue - refunded.")
    return_rate_items: float
    return_rate_value: float
    first_order_at: str | None
    last_order_at: str | None
    last_return_at: str | None
    flags: list[str] = Field(description='e.g. ["serial_returner"]')


class CustomerRowPage(BaseModel):
    data: list[CustomerRow]
    next_cursor: str | None


class SegmentCreate(Schema):
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    where: ParsedText = Field(
        description=f"The expression (at most {MAX_LENGTH} characters), as for "
        "GET /v1/customers; checked now, a malformed one is 400 naming the position."
    )


class SegmentOut(BaseModel):
    id: str
    name: str
    where: str
    created_at: str
    updated_at: str


class SegmentDetail(SegmentOut):
    customer_count: int = Field(description="The (customer, currency) rows it selects now.")


class SegmentPage(BaseModel):
    data: list[SegmentOut]
    next_cursor: str | None
