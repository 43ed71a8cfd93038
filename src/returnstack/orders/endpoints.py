from typing import Annotated, Any

from fastapi import APIRouter, Path

from returnstack.kit.deps import DbSession
from returnstack.kit.errors import AuthenticationFailed, Forbidden, InvalidRequest, NotFound
from returnstack.kit.http import ClientIdConvertor  # noqa: F401  (registers {…:client_id})
from returnstack.kit.openapi import errors
from returnstack.kit.routing import RenderInThreadRoute
from returnstack.orders.schemas import Order
from returnstack.orders.service import get_order
from returnstack.tenants.auth import SecretKey

router = APIRouter(route_class=RenderInThreadRoute, tags=["orders"])


@router.get(
    "/v1/orders/{order_id:client_id}",  # client ids may contain "/"
    response_model=Order,
    responses=errors(InvalidRequest, AuthenticationFailed, Forbidden, NotFound),
)
def read_order(
    order_id: Annotated[str, Path(min_length=1, max_length=128)],
    principal: SecretKey,
    session: DbSession,
) -> dict[str, Any]:
    """An order with, per line, the quantities bought, claimed by returns, returned, and
    still returnable (`returnable_quantity = quantity - claimed_quantity`)."""
    return get_order(session, tenant_id=principal.tenant_id, order_id=order_id)
