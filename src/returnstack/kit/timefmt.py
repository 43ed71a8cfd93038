from datetime import UTC, datetime


def rfc3339(value: datetime | None) -> str | None:
    """UTC, with a Z: 2026-11-02T14:03:00Z."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
