"""Validation of a whole event batch, event by event, so each error names its event."""

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from returnstack.events.schemas import (
    MAX_EVENTS_PER_REQUEST,
    PurchaseEvent,
    ReturnEvent,
    value_errors,
)
from returnstack.kit.errors import (
    PayloadTooLarge,
    ValidationFailed,
    validation_details,
)
from returnstack.kit.jsontext import loads_fast

EVENT_MODELS: dict[str, type[PurchaseEvent] | type[ReturnEvent]] = {
    "purchase": PurchaseEvent,
    "return": ReturnEvent,
}

ValidEvent = PurchaseEvent | ReturnEvent


@dataclass
class CheckedBatch:
    valid: list[ValidEvent] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)


def check_event(raw: Any) -> ValidEvent | list[dict[str, Any]]:
    """One event: its model, or its errors with paths relative to the event."""
    if not isinstance(raw, dict):
        return [{"path": "", "message": "must be an object", "code": "object_type"}]
    kind = raw.get("type")
    model = EVENT_MODELS.get(kind) if isinstance(kind, str) else None
    if model is None:
        return [
            {"path": "type", "message": "must be 'purchase' or 'return'", "code": "literal_error"}
        ]
    try:
        event = model.model_validate(raw)
    except ValidationError as exc:
        return validation_details(exc.errors())
    errors = value_errors(event.items)
    if isinstance(event, PurchaseEvent):
        errors += event.duplicate_line_errors()
    return errors or event


def parse_body(body: bytes) -> list[Any]:
    """The request's events list; 400 for a body that is not JSON, 413 for too many events."""
    document = loads_fast(body)
    if not isinstance(document, dict):
        raise ValidationFailed(details=[{"path": "", "message": "must be an object"}])
    unknown = sorted(set(document) - {"events"})
    if unknown:
        raise ValidationFailed(
            details=[{"path": key, "message": "unknown field"} for key in unknown]
        )
    events = document.get("events")
    if not isinstance(events, list):
        raise ValidationFailed(details=[{"path": "events", "message": "must be a list of events"}])
    if not events:
        raise ValidationFailed(details=[{"path": "events", "message": "must not be empty"}])
    if len(events) > MAX_EVENTS_PER_REQUEST:
        raise PayloadTooLarge(
            f"At most {MAX_EVENTS_PER_REQUEST} events per request; got {len(events)}.",
            details=[{"path": "events", "message": f"at most {MAX_EVENTS_PER_REQUEST} events"}],
        )
    return events


def check_batch(events: list[Any]) -> CheckedBatch:
    batch = CheckedBatch()
    for index, raw in enumerate(events):
        checked = check_event(raw)
        if isinstance(checked, list):
            event_id = raw.get("id") if isinstance(raw, dict) else None
            batch.rejected.append(
                {
                    "index": index,
                    "id": event_id if isinstance(event_id, str) else None,
                    "errors": checked,
                }
            )
        else:
            batch.valid.append(checked)
    return batch


def all_or_nothing_error(rejected: list[dict[str, Any]]) -> ValidationFailed:
    details = []
    for rejection in rejected:
        for error in rejection["errors"]:
            path = f"events[{rejection['index']}]"
            if error["path"]:
                path += ("" if error["path"].startswith("[") else ".") + error["path"]
            details.append({**error, "path": path})
    count = len(rejected)
    return ValidationFailed(
        f"{count} event{'s' if count != 1 else ''} failed validation; nothing was written.",
        details=details,
    )
