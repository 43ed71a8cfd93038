"""Path parameters and the list filters of the returns API, declared once."""

from typing import Annotated, Any, get_args

from fastapi import Depends, Path, Query
from pydantic import AwareDatetime, BeforeValidator

from returnstack.kit.errors import InvalidRequest
from returnstack.kit.types import normalize_email
from returnstack.models.returns import Channel, ReturnSource, ReturnStatus
from returnstack.returns.repository import ReturnFilters

ReturnId = Annotated[str, Path(description="`ret_...`, or the number: `R-000123`.")]
AttachmentId = Annotated[str, Path(description="`att_...`")]
_STATUSES = frozenset(ReturnStatus)


def _known_statuses(values: Any) -> Any:
    # Every unknown value is reported, each as its own detail (the contract's 400).
    unknown = [value for value in values or () if value not in _STATUSES]
    if unknown:
        raise InvalidRequest(
            details=[
                {"path": "status", "message": f"unknown status {value!r}"} for value in unknown
            ]
        )
    return values


def _one_of(vocabulary: Any) -> str:
    return f"^({'|'.join(get_args(vocabulary))})$"


def return_filters(
    customer_id: Annotated[str | None, Query(max_length=128)] = None,
    email: Annotated[str | None, Query(max_length=320)] = None,
    status: Annotated[
        list[ReturnStatus] | None,
        Query(description="Repeatable."),
        BeforeValidator(_known_statuses),
    ] = None,
    order_id: Annotated[str | None, Query(max_length=128)] = None,
    product_id: Annotated[str | None, Query(max_length=128)] = None,
    channel: Annotated[str | None, Query(pattern=_one_of(Channel))] = None,
    store_id: Annotated[str | None, Query(max_length=128)] = None,
    source: Annotated[str | None, Query(pattern=_one_of(ReturnSource))] = None,
    reason: Annotated[str | None, Query(max_length=64)] = None,
    created_after: AwareDatetime | None = None,
    created_before: AwareDatetime | None = None,
    q: Annotated[
        str | None, Query(max_length=200, description="Number, external id, email, notes.")
    ] = None,
) -> ReturnFilters:
    try:
        email = normalize_email(email) if email is not None else None
    except ValueError as exc:
        raise InvalidRequest(details=[{"path": "email", "message": str(exc)}]) from None
    return ReturnFilters(
        customer_id=customer_id,
        email=email,
        status=tuple(status or ()),
        order_id=order_id,
        product_id=product_id,
        channel=channel,
        store_id=store_id,
        source=source,
        reason=reason,
        created_after=created_after,
        created_before=created_before,
        q=q,
    )


ListFilters = Annotated[ReturnFilters, Depends(return_filters)]
