"""Requests and responses of the returns API (API.md section 4)."""

from datetime import datetime
from typing import Annotated, Any, get_args

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)

from returnstack.kit.errors import InvalidRequest
from returnstack.kit.schemas import Schema
from returnstack.kit.types import (
    MAX_ITEMS_PER_RETURN,
    Amount,
    ClientId,
    Email,
    Metadata,
    Note,
    Quantity,
    ShortText,
    normalize_email,
)
from returnstack.models.returns import (
    Channel,
    DeclineReason,
    Disposition,
    Outcome,
    RefundMethod,
    Resolution,
    ReturnSource,
    ReturnStatus,
)

ExternalId = Annotated[str, Field(min_length=1, max_length=255)]
MAX_ITEMS = MAX_ITEMS_PER_RETURN


class CustomerRef(Schema):
    id: ClientId | None = None
    email: Email | None = None


class StoreRef(Schema):
    id: ClientId


class ReturnItemCreate(Schema):
    order_id: ClientId
    line_id: ClientId | None = Field(None, description="Or product_id, when unambiguous.")
    product_id: ClientId | None = None
    quantity: Quantity
    reason: Annotated[str, Field(min_length=1, max_length=64)] = Field(
        description="A code from the tenant's reasons."
    )
    note: Note | None = Field(None, description="Required when reason is 'other'.")
    resolution: Resolution = "refund"

    @model_validator(mode="after")
    def _names_a_line(self) -> "ReturnItemCreate":
        if self.line_id is None and self.product_id is None:
            raise ValueError("give line_id or product_id")
        return self


class ReturnRequest(Schema):
    """What a return asks for."""

    channel: Channel = "online"
    store: StoreRef | None = None
    items: list[ReturnItemCreate] = Field(min_length=1, max_length=MAX_ITEMS)
    external_id: ExternalId | None = None
    metadata: Metadata | None = None
    note: Note | None = None


class ReturnCreate(ReturnRequest):
    """Staff's body: a return request, for a customer."""

    customer: CustomerRef | None = Field(
        None, description="Defaults to the customer of the first order."
    )


class ReturnUpdate(Schema):
    items: list[ReturnItemCreate] | None = Field(None, min_length=1, max_length=MAX_ITEMS)
    note: Note | None = None
    external_id: ExternalId | None = None
    metadata: Metadata | None = None


class NoteBody(Schema):
    note: Note | None = None


class DeclineBody(Schema):
    reason: DeclineReason
    note: Note | None = None


class ReceiveItem(Schema):
    order_id: ClientId
    line_id: ClientId
    quantity: Quantity
    outcome: Outcome = "received"
    disposition: Disposition | None = Field(
        None, description="Defaults to restock for received items, else not_restocked."
    )


class ReceiveBody(Schema):
    items: list[ReceiveItem] = Field(min_length=1, max_length=MAX_ITEMS)
    note: Note | None = None


class RefundBody(Schema):
    amount: Amount | None = Field(
        None, description="Default: the refundable value of what was received, minus fees."
    )
    method: RefundMethod
    note: Note | None = None


class CancelBody(Schema):
    reason: ShortText | None = None
    note: Note | None = None


_STATUSES = frozenset(ReturnStatus)


# _known_statuses and _email raise the 400 themselves (not a ValueError, which would become
# the generic "Invalid parameters."): their details name the value and carry no code.
def _known_statuses(values: Any) -> Any:
    unknown = [value for value in values or () if value not in _STATUSES]
    if unknown:
        raise InvalidRequest(
            details=[
                {"path": "status", "message": f"unknown status {value!r}"} for value in unknown
            ]
        )
    return values


def _email(value: str | None) -> str | None:
    try:
        return None if value is None else normalize_email(value)
    except ValueError as exc:
        raise InvalidRequest(details=[{"path": "email", "message": str(exc)}]) from None


def _one_of(vocabulary: Any) -> str:
    return f"^({'|'.join(get_args(vocabulary))})$"


class ReturnQuery(BaseModel):
    """The filters of GET /v1/returns."""

    customer_id: str | None = Field(None, max_length=128)
    email: Annotated[str | None, AfterValidator(_email)] = Field(None, max_length=320)
    status: Annotated[list[ReturnStatus], BeforeValidator(_known_statuses)] = Field(
        [], description="Repeatable."
    )
    order_id: str | None = Field(None, max_length=128)
    product_id: str | None = Field(None, max_length=128)
    channel: str | None = Field(None, pattern=_one_of(Channel))
    store_id: str | None = Field(None, max_length=128)
    source: str | None = Field(None, pattern=_one_of(ReturnSource))
    reason: str | None = Field(None, max_length=64)
    created_after: AwareDatetime | None = None
    created_before: AwareDatetime | None = None
    q: str | None = Field(None, max_length=200, description="Number, external id, email, notes.")


# --- responses ----------------------------------------------------------------------------


class CustomerOut(BaseModel):
    id: str | None
    email: str | None


class StoreOut(BaseModel):
    id: str
    name: str | None
    city: str | None
    country: str | None


class ReturnItemOut(BaseModel):
    order_id: str
    line_id: str | None
    product_id: str
    variant_id: str | None
    quantity: int
    received_quantity: int
    reason: str
    note: str | None
    resolution: str
    unit_price: int | None
    outcome: str | None
    disposition: str | None


class RefundOut(BaseModel):
    amount: int
    currency: str
    method: str | None
    refunded_at: datetime | None


class FeesOut(BaseModel):
    restocking: int
    shipping: int


class AttachmentOut(BaseModel):
    id: str
    filename: str
    content_type: str
    size: int
    url: str


class HistoryOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    at: datetime
    from_: str | None = Field(alias="from")
    to: str
    action: str
    actor: str
    note: str | None


class ReturnOut(BaseModel):
    id: str
    number: str
    external_id: str | None
    status: ReturnStatus
    source: str
    channel: str
    store: StoreOut | None
    customer: CustomerOut | None
    currency: str
    items: list[ReturnItemOut]
    refund: RefundOut | None
    fees: FeesOut
    attachments: list[AttachmentOut]
    metadata: dict[str, Any]
    note: str | None
    created_at: datetime
    updated_at: datetime
    closed_at: datetime | None
    version: int
    allowed_actions: list[str]
    history: list[HistoryOut]


class ReturnPage(BaseModel):
    data: list[ReturnOut]
    next_cursor: str | None


class PreviewError(BaseModel):
    code: str
    message: str


class PreviewItem(BaseModel):
    index: int
    order_id: str
    line_id: str | None
    product_id: str | None
    quantity: int
    eligible: bool
    errors: list[PreviewError]
    unit_price: int | None
    refundable: int = Field(description="Value of the item before fees.")
    fee: int = Field(description="Restocking fee on this item.")


class Preview(BaseModel):
    eligible: bool
    currency: str | None
    items: list[PreviewItem]
    fees: FeesOut
    total: int = Field(description="What a refund of every item would pay, after fees.")
