from pydantic import BaseModel, Field

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
