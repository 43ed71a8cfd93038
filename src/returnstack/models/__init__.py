"""ORM tables. Importing this package registers every table on Base.metadata."""

from returnstack.models.base import Base
from returnstack.models.carts import Cart
from returnstack.models.customers import Customer, CustomerEmail
from returnstack.models.dashboard import DashboardSession, DashboardUser
from returnstack.models.events import Event
from returnstack.models.orders import Order, OrderLine, Store
from returnstack.models.outbox import OutboxEvent
from returnstack.models.products import (
    CategorySignal,
    ProductBreakdown,
    ProductReason,
    ProductSignal,
)
from returnstack.models.profiles import CustomerProfile, Segment
from returnstack.models.reported import ReportedEvent, ReportedItem
from returnstack.models.returns import Attachment, Policy, Return, ReturnHistory, ReturnItem
from returnstack.models.storefront import StorefrontSession
from returnstack.models.tenants import ApiKey, IdempotencyKey, Tenant, TenantCounter
from returnstack.models.webhooks import WebhookDelivery, WebhookState, WebhookSubscription

__all__ = [
    "ApiKey",
    "Attachment",
    "Base",
    "Cart",
    "CategorySignal",
    "Customer",
    "CustomerEmail",
    "CustomerProfile",
    "DashboardSession",
    "DashboardUser",
    "Event",
    "IdempotencyKey",
    "Order",
    "OrderLine",
    "OutboxEvent",
    "Policy",
    "ProductBreakdown",
    "ProductReason",
    "ProductSignal",
    "ReportedEvent",
    "ReportedItem",
    "Return",
    "ReturnHistory",
    "ReturnItem",
    "Segment",
    "Store",
    "StorefrontSession",
    "Tenant",
    "TenantCounter",
    "WebhookDelivery",
    "WebhookState",
    "WebhookSubscription",
]
