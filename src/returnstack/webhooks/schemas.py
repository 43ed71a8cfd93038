"""Request and response shapes of /v1/webhooks and /v1/messages."""

from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, BeforeValidator, Field, StringConstraints

from returnstack.kit.schemas import Schema
from returnstack.kit.types import _timestamp_input

MAX_URL_LENGTH = 2000

WebhookUrl = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_URL_LENGTH),
]
EventTypes = Annotated[list[str], Field(min_length=1, max_length=100)]
Description = Annotated[str, StringConstraints(max_length=500)]


class WebhookCreate(Schema):
    url: WebhookUrl = Field(
        description="An http(s) URL (at most 2,000 characters). Loopback, private and "
        "link-local addresses are refused unless the server allows them."
    )
    events: EventTypes = Field(description='Event types to receive, or `["*"]` for all.')
    description: Description | None = None
    enabled: bool = True


class WebhookUpdate(Schema):
    url: WebhookUrl | None = None
    events: EventTypes | None = None
    description: Description | None = None
    enabled: bool | None = Field(
        None, description="false stops deliveries; true resumes them (and clears the reason)."
    )


class Webhook(BaseModel):
    id: str = Field(description="whk_...")
    url: str
    events: list[str]
    description: str | None
    enabled: bool
    disabled_reason: str | None = Field(
        description="Why the subscription was disabled: by a request, a 410 from the "
        "receiver, or 5 days of failed deliveries."
    )
    previous_secret_expires_at: str | None = Field(
        description="After a rotation: until then deliveries carry the old signature too."
    )
    created_at: str
    updated_at: str


class WebhookWithSecret(Webhook):
    secret: str = Field(description="The signing secret (whsec_...), shown only now.")


class WebhookPage(BaseModel):
    data: list[Webhook]
    next_cursor: str | None


class Delivery(BaseModel):
    id: str = Field(description="del_...")
    event_id: str = Field(description="The message id, sent as `webhook-id`.")
    event_type: str
    attempt: int = Field(description="1 for the first attempt of this message, then 2, ...")
    status: str = Field(description="pending | succeeded | failed")
    trigger: str = Field(description="scheduled | manual | recover")
    response_status: int | None
    response_body: str | None = Field(description="The first 1,000 characters of the answer.")
    error: str | None
    attempted_at: str | None
    next_attempt_at: str | None = Field(
        description="Pending: when it will be attempted. Failed: when the next attempt is due "
        "(null when none follows)."
    )
    duration_ms: int | None


class DeliveryPage(BaseModel):
    data: list[Delivery]
    next_cursor: str | None


class RecoverRequest(Schema):
    since: Annotated[AwareDatetime, BeforeValidator(_timestamp_input)] = Field(
        description="RFC 3339; at most the retention (30 days) ago."
    )


class RecoverAccepted(BaseModel):
    queued: int = Field(description="Messages queued again, oldest first.")


class Message(BaseModel):
    id: str = Field(description="msg_..., the `webhook-id` of its deliveries.")
    type: str
    timestamp: str
    data: dict[str, Any]
    changes: dict[str, Any] | None


class MessagePage(BaseModel):
    data: list[Message]
    next_cursor: str | None = Field(
        description="The id of the last message when more may follow; pass it as `after`."
    )
