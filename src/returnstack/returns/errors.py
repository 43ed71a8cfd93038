"""The business facts of returns, named once: the code of every refusal, and the errors that
state a single fact."""

from enum import StrEnum

from returnstack.kit.errors import PreconditionFailed, ValidationFailed


class ReturnErrorCode(StrEnum):
    """The `code` of an error detail about a return or one of its items."""

    # Eligibility of a requested item (POST /v1/returns, the preview, the storefront).
    order_not_found = "order_not_found"
    order_not_owned = "order_not_owned"
    line_not_found = "line_not_found"
    ambiguous_line = "ambiguous_line"
    quantity_exceeds_returnable = "quantity_exceeds_returnable"
    outside_return_window = "outside_return_window"
    final_sale = "final_sale"
    unknown_reason = "unknown_reason"
    note_required = "note_required"
    currency_mismatch = "currency_mismatch"
    total_out_of_range = "total_out_of_range"
    # The lifecycle actions.
    invalid_transition = "invalid_transition"
    item_not_in_return = "item_not_in_return"
    quantity_exceeds_requested = "quantity_exceeds_requested"
    refund_exceeds_refundable = "refund_exceeds_refundable"


_ACTION_CODES = {
    ReturnErrorCode.invalid_transition,
    ReturnErrorCode.item_not_in_return,
    ReturnErrorCode.quantity_exceeds_requested,
    ReturnErrorCode.refund_exceeds_refundable,
}
ELIGIBILITY_CODES = tuple(code for code in ReturnErrorCode if code not in _ACTION_CODES)
# What keeps an order line from being returned at all now (the storefront's `ineligible`).
LINE_CODES = (
    ReturnErrorCode.final_sale,
    ReturnErrorCode.outside_return_window,
    ReturnErrorCode.quantity_exceeds_returnable,
)


def code_list(codes: tuple[ReturnErrorCode, ...] = ELIGIBILITY_CODES) -> str:
    """`a`, `b`, `c`: the codes as an endpoint's description lists them."""
    return ", ".join(f"`{code}`" for code in codes)


class RefundExceedsRefundable(ValidationFailed):
    code = ReturnErrorCode.refund_exceeds_refundable

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"The refund may be at most {limit}: the refundable value of what was received, "
            "less what was refunded before.",
            details=[{"path": "amount", "message": f"must be at most {limit}", "code": self.code}],
        )


class VersionMismatch(PreconditionFailed):
    """If-Match named another version than the return's."""

    def __init__(self, *, current: int, given: int) -> None:
        super().__init__(
            f"The return is at version {current}, not {given}.",
            details=[{"path": "If-Match", "message": f"current version is {current}"}],
            extra={"current_version": current},
        )
