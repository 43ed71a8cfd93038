from datetime import UTC, datetime
from typing import Any


def plain(value: Any) -> Any:
    """A value as JSON shows it: a datetime in ISO 8601 (UTC, +00:00), anything else as is."""
    return value.astimezone(UTC).isoformat() if isinstance(value, datetime) else value


def rfc3339(value: datetime | None) -> str | None:
    """UTC, with a Z: 2026-11-02T14:03:00Z."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
