from typing import Annotated

import orjson
from fastapi import APIRouter, Path, Request, Response
from sqlalchemy.engine import Connection

from returnstack.kit.deps import read_json
from returnstack.kit.errors import AuthenticationFailed, Forbidden, InvalidRequest, NotFound
from returnstack.kit.http import ClientIdConvertor  # noqa: F401  (registers {…:client_id})
from returnstack.kit.openapi import errors
from returnstack.kit.routing import RenderInThreadRoute
from returnstack.orders.schemas import Order
from returnstack.orders.service import get_order
from returnstack.tenants.auth import CachedSecretKey, confirm_key

router = APIRouter(route_class=RenderInThreadRoute, tags=["orders"])


@router.get(
    "/v1/orders/{order_id:client_id}",  # client ids may contain "/"
    response_model=Order,
    responses=errors(InvalidRequest, AuthenticationFailed, Forbidden, NotFound),
)
async def read_order(
    request: Request,
    order_id: Annotated[str, Path(min_length=1, max_length=128)],
    caller: CachedSecretKey,
) -> Response:
    """An order with, per line, the quantities bought, claimed by returns, returned, and
    still returnable (`returnable_quantity = quantity - claimed_quantity`)."""

    # Lean: the caller from the key cache, confirmed on the read's connection; two Core
    # queries; the dict (in `Order`'s field order) rendered straight to JSON.
    def read(connection: Connection) -> bytes:
        confirm_key(request, connection, caller)
        tenant_id = caller.principal.tenant_id
        return orjson.dumps(get_order(connection, tenant_id=tenant_id, order_id=order_id))

    return await read_json(request, read)
