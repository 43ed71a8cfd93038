"""Customer profiles: read by id or email, the customer's orders and returns, erasure."""

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from returnstack.customers import erasure
from returnstack.customers import repository as customers
from returnstack.customers.render import customer_profile, email_profile
from returnstack.customers.schemas import CustomerProfileOut, OrderPage
from returnstack.kit.deps import DbSession, read_json
from returnstack.kit.errors import AuthenticationFailed, Forbidden, InvalidRequest, NotFound
from returnstack.kit.http import (
    ClientIdConvertor,  # noqa: F401  (registers {…:client_id})
    Limit,
)
from returnstack.kit.openapi import errors
from returnstack.kit.routing import RenderInThreadRoute
from returnstack.kit.types import normalize_email
from returnstack.orders.service import render_orders
from returnstack.returns import repository
from returnstack.returns.attachments import AttachmentStorage
from returnstack.returns.attachments_endpoints import get_storage
from returnstack.returns.schemas import ReturnPage
from returnstack.tenants.auth import CachedSecretKey, SecretKey, confirm_key

router = APIRouter(route_class=RenderInThreadRoute, tags=["customers"])

READ_ERRORS = errors(InvalidRequest, AuthenticationFailed, Forbidden, NotFound)
CustomerId = Annotated[str, Path(min_length=1, max_length=128)]
Cursor = Annotated[str | None, Query(max_length=500)]


Email = Annotated[str, Query(min_length=3, max_length=320)]


def _normalized(email: str) -> str:
    try:
        return normalize_email(email)
    except ValueError as exc:
        raise InvalidRequest(details=[{"path": "email", "message": str(exc)}]) from None


def _not_found(customer_id: str) -> NotFound:
    return NotFound(f"No customer {customer_id!r}.")


def _emails_of_known(reader: Session | Connection, tenant_id: str, customer_id: str) -> list[str]:
    """The customer's linked emails (one query); 404 for a customer never seen (or erased)."""
    connection = reader.connection() if isinstance(reader, Session) else reader
    record, has_profile, emails = customers.identity(
        connection, tenant_id=tenant_id, customer_id=customer_id
    )
    if record is None and not has_profile:
        raise _not_found(customer_id)
    return emails


# The reads below are lean: the caller from the key cache (confirmed on the read's own
# connection), one trip to the thread pool, two or three Core queries, and the dicts rendered
# straight to JSON (`response_model` documents the shape, which they follow field by field).


@router.get("/v1/customers/lookup", response_model=CustomerProfileOut, responses=READ_ERRORS)
async def lookup_customer(request: Request, email: Email, caller: CachedSecretKey) -> Response:
    """The profile of the customer an email belongs to; for an email no customer claimed
    yet (a guest), the guest's own profile, with `customer.id` null."""

    def read(connection: Connection) -> bytes:
        confirm_key(request, connection, caller)
        tenant_id = caller.principal.tenant_id
        profile = email_profile(connection, tenant_id=tenant_id, email=_normalized(email))
        if profile is None:
            raise NotFound("No customer with this email.")
        return orjson.dumps(profile)

    return await read_json(request, read)


@router.delete(
    "/v1/customers/lookup", status_code=204, response_class=Response, responses=READ_ERRORS
)
def erase_by_email(
    email: Email,
    principal: SecretKey,
    session: DbSession,
    storage: Annotated[AttachmentStorage, Depends(get_storage)],
) -> Response:
    """Erase the person an email belongs to: a guest (known only by this email), or the
    customer it is linked to (as `DELETE /v1/customers/{id}`, everything of theirs). 404
    when the email was never seen or is already erased."""
    erasure.erase_email(
        session, tenant_id=principal.tenant_id, email=_normalized(email), storage=storage
    )
    return Response(status_code=204)


# The sub-resources come before the profile: a customer id may contain "/".
@router.get(
    "/v1/customers/{customer_id:client_id}/orders", response_model=OrderPage, responses=READ_ERRORS
)
async def customer_orders(
    request: Request,
    customer_id: CustomerId,
    caller: CachedSecretKey,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Response:
    """The customer's orders, newest first (also those placed under a linked email alone)."""

    def read(connection: Connection) -> bytes:
        confirm_key(request, connection, caller)
        tenant_id = caller.principal.tenant_id
        emails = _emails_of_known(connection, tenant_id, customer_id)
        rows, next_cursor = customers.customer_orders(
            connection,
            tenant_id=tenant_id,
            customer_id=customer_id,
            emails=emails,
            limit=limit,
            cursor=cursor,
        )
        orders = render_orders(connection, tenant_id=tenant_id, orders=rows)
        return orjson.dumps({"data": orders, "next_cursor": next_cursor})

    return await read_json(request, read)


@router.get(
    "/v1/customers/{customer_id:client_id}/returns",
    response_model=ReturnPage,
    responses=READ_ERRORS,
)
def customer_returns(
    customer_id: CustomerId,
    principal: SecretKey,
    session: DbSession,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """The customer's returns, newest first (also those made as a guest with a linked email)."""
    tenant_id = principal.tenant_id
    emails = _emails_of_known(session, tenant_id, customer_id)
    filters = repository.ReturnFilters(customer_id=customer_id, guest_emails=tuple(emails))
    rows, next_cursor = repository.list_returns(
        session, tenant_id=tenant_id, filters=filters, limit=limit, cursor=cursor
    )
    return {
        "data": repository.render_returns(session, tenant_id=tenant_id, returns=rows),
        "next_cursor": next_cursor,
    }


@router.get(
    "/v1/customers/{customer_id:client_id}",
    response_model=CustomerProfileOut,
    responses=READ_ERRORS,
)
async def read_customer(
    request: Request, customer_id: CustomerId, caller: CachedSecretKey
) -> Response:
    """The customer's profile: per currency what they bought, returned and were refunded,
    and their net (return-adjusted) revenue; channels; flags such as `serial_returner`."""

    def read(connection: Connection) -> bytes:
        confirm_key(request, connection, caller)
        tenant_id = caller.principal.tenant_id
        profile = customer_profile(connection, tenant_id=tenant_id, customer_id=customer_id)
        if profile is None:
            raise _not_found(customer_id)
        return orjson.dumps(profile)

    return await read_json(request, read)


@router.delete(
    "/v1/customers/{customer_id:client_id}",
    status_code=204,
    response_class=Response,
    responses=READ_ERRORS,
)
def erase_customer(
    customer_id: CustomerId,
    principal: SecretKey,
    session: DbSession,
    storage: Annotated[AttachmentStorage, Depends(get_storage)],
) -> Response:
    """Erase the customer's personal data: their id and emails on orders and returns,
    notes, metadata and attachments of their returns, their profile and sessions, and every
    copy (history actors, outbox events, idempotency replays, saved segments). What they
    bought and returned still counts, anonymously, for products and reports. Records
    `customer.erased` (data: the server id only)."""
    erasure.erase_customer(
        session, tenant_id=principal.tenant_id, customer_id=customer_id, storage=storage
    )
    return Response(status_code=204)
