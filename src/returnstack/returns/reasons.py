"""Return reason codes. The tenant policy (returns management) may extend this list."""

DEFAULT_REASONS: dict[str, dict[str, object]] = {
    "size_too_small": {"label": "Size too small", "merchant_fault": False},
    "size_too_large": {"label": "Size too large", "merchant_fault": False},
    "color": {"label": "Color", "merchant_fault": False},
    "style": {"label": "Style", "merchant_fault": False},
    "unwanted": {"label": "No longer wanted", "merchant_fault": False},
    "defective": {"label": "Defective", "merchant_fault": True},
    "damaged_in_transit": {"label": "Damaged in transit", "merchant_fault": True},
    "not_as_described": {"label": "Not as described", "merchant_fault": True},
    "wrong_item": {"label": "Wrong item", "merchant_fault": True},
    "other": {"label": "Other", "merchant_fault": False},
}


def normalize_free_text_reason(
    reason: str | None, note: str | None, known: set[str] | frozenset[str]
) -> tuple[str, str | None]:
    """Reasons from other systems are free text: a known code stays, anything else becomes
    'other' with the text kept in the note."""
    if reason is None or not reason.strip():
        return "other", note
    code = reason.strip()
    if code in known:
        return code, note
    lowered = code.lower().replace(" ", "_").replace("-", "_")
    if lowered in known:
        return lowered, note
    return "other", code if not note else f"{code}: {note}"
