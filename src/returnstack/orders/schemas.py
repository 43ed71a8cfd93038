from datetime import datetime

from pydantic import BaseModel, Field


class CustomerSummary(BaseModel):
    id: str | None
    email: str | None


class StoreSummary(BaseModel):
    id: str
    name: str | None
    city: str | None
    country: str | None


class OrderLine(BaseModel):
    line_id: str
    product_id: str
    variant_id: str | None
    name: str | None
    category: str | None
    quantity: int = Field(description="Units bought.")
    unit_price: int = Field(description="Minor units of the order's currency.")
    claimed_quantity: int = Field(description="Units in returns neither declined nor cancelled.")
    returned_quantity: int = Field(
        description="Units in recorded returns plus units received through the lifecycle."
    )
    returnable_quantity: int = Field(description="quantity - claimed_quantity, at least 0.")


class Order(BaseModel):
    order_id: str
    customer: CustomerSummary | None
    channel: str
    store: StoreSummary | None
    currency: str
    placed_at: datetime
    lines: list[OrderLine]
