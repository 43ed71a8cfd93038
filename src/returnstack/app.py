"""The FastAPI application factory."""

import gc
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from anyio import to_thread
from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig
from opentelemetry import _logs, metrics, trace

from returnstack import __version__
from returnstack.compat.constructor import router as constructor_router
from returnstack.compat.emporix import router as emporix_router
from returnstack.compat.optimove import router as optimove_router
from returnstack.compat.sailthru import router as sailthru_router
from returnstack.config import Settings, get_settings
from returnstack.customers.endpoints import router as customers_router
from returnstack.customers.segment_endpoints import router as segments_router
from returnstack.dashboard.routes import install as install_dashboard
from returnstack.events.endpoints import router as events_router
from returnstack.kit import migrate
from returnstack.kit.admission import Admission
from returnstack.kit.cors import RouteCORS
from returnstack.kit.db import Database, StatisticsKeeper
from returnstack.kit.errors import install_error_handlers
from returnstack.kit.groupcommit import GroupCommitter
from returnstack.kit.health import router as health_router
from returnstack.kit.middleware import RequestMiddleware
from returnstack.kit.openapi import install_openapi
from returnstack.kit.ratelimit import TokenBuckets
from returnstack.kit.responses import JSONResponse
from returnstack.orders.endpoints import router as orders_router
from returnstack.products.endpoints import router as products_router
from returnstack.returns.attachments_endpoints import router as attachments_router
from returnstack.returns.endpoints import policy_router
from returnstack.returns.endpoints import router as returns_router
from returnstack.storefront.endpoints import router as storefront_router
from returnstack.storefront.signin import GuestSignIns
from returnstack.tenants.auth import KeyCache
from returnstack.webhooks.endpoints import router as webhooks_router

DESCRIPTION = """\
returnstack is a self-hostable returns platform: returns management, event collection
(online and in store), return-adjusted customer profiles and product return signals.

Authenticate with `Authorization: Bearer <key>`: secret keys (`sk_...`) may use everything;
publishable keys (`pk_...`) are public and may only send events and use the storefront.
Events sent with a publishable key are *reported*: kept for product signals, never orders,
returns, refunds, customers or profiles (facts come from secret keys).
"""


# OpenTelemetry's providers before anything sets them up (opentelemetry-api's proxies).
_OTEL_DEFAULTS = {
    ("opentelemetry.trace", "ProxyTracerProvider"),
    ("opentelemetry.metrics._internal", "_ProxyMeterProvider"),
    ("opentelemetry._logs._internal", "ProxyLoggerProvider"),
}
_OTEL_ENVIRONMENT = (
    "OTEL_PYTHON_TRACER_PROVIDER",
    "OTEL_PYTHON_METER_PROVIDER",
    "OTEL_PYTHON_LOGGER_PROVIDER",
)


def fastapi_telemetry() -> TelemetryConfig | None:
    """FastAPI's own OpenTelemetry spans, metrics and logs stay as FastAPI sets them when
    OpenTelemetry is set up in the process when the app is made (a provider set, e.g. by
    `opentelemetry-instrument`, or named by the environment, or FASTAPI_OTEL_AUTO_CONFIGURE);
    otherwise they are turned off. FastAPI otherwise asks on every request whether a
    provider has been set since (three environment look-ups and three provider checks, tens
    of µs of a one-event request: bench/README.md)."""
    if os.environ.get("FASTAPI_OTEL_AUTO_CONFIGURE", "").lower() == "true" or any(
        name in os.environ for name in _OTEL_ENVIRONMENT
    ):
        return None
    providers = (
        trace.get_tracer_provider(),
        metrics.get_meter_provider(),
        _logs.get_logger_provider(),
    )
    if any((type(p).__module__, type(p).__name__) not in _OTEL_DEFAULTS for p in providers):
        return None
    return {"tracing": False, "metrics": False, "logs": False}


def create_app(settings: Settings | None = None, *, database: Database | None = None) -> FastAPI:
    settings = settings or get_settings()
    db = database or Database(settings, background_checkpoints=True)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        dispatcher = None
        if settings.webhooks_dispatcher:
            from returnstack.webhooks.process import DispatcherProcess

            dispatcher = DispatcherProcess(settings)
            dispatcher.start()
        app.state.dispatcher = dispatcher
        keeper = None
        if database is None and db.is_sqlite and settings.sqlite_analyze_interval > 0:
            keeper = StatisticsKeeper(db, settings.sqlite_analyze_interval)
            keeper.start()
        try:
            yield
        finally:
            if keeper is not None:
                await to_thread.run_sync(keeper.stop)
            await to_thread.run_sync(app.state.ingest.stop)
            if dispatcher is not None:
                await to_thread.run_sync(dispatcher.shutdown)
            if database is None:
                db.dispose()

    if settings.auto_migrate and not migrate.is_current(db.engine):
        migrate.upgrade(db.engine)

    app = FastAPI(
        title="returnstack",
        version=__version__,
        description=DESCRIPTION,
        default_response_class=JSONResponse,
        lifespan=lifespan,
        telemetry=fastapi_telemetry(),
    )
    app.state.settings = settings
    app.state.db = db
    app.state.rate_limiter = (
        TokenBuckets(settings.rate_limit_per_second, settings.rate_limit_burst)
        if settings.rate_limit_per_second > 0
        else None
    )
    app.state.guest_sign_ins = GuestSignIns()
    app.state.keys = KeyCache()
    # The process's one writer of events (group commit: events/endpoints.py).
    app.state.ingest = GroupCommitter(
        db, max_wait=settings.ingest_max_wait, queue_limit=settings.ingest_queue_limit
    )
    # Requests that waited too long for a thread are refused (kit/admission.py).
    app.state.admission = Admission(settings.admission_max_wait)
    install_error_handlers(app)
    install_openapi(app)
    app.add_middleware(
        RequestMiddleware,
        max_body_bytes=settings.max_body_bytes,
        log_requests=settings.log_requests,
        admission=app.state.admission,
    )
    app.add_middleware(
        RouteCORS,
        public_origins=settings.cors_origins,
        staff_origins=settings.cors_staff_origins,
    )
    app.include_router(health_router)
    app.include_router(events_router)
    app.include_router(orders_router)
    app.include_router(returns_router)
    app.include_router(policy_router)
    app.include_router(attachments_router)
    app.include_router(storefront_router)
    app.include_router(segments_router)  # before customers: /v1/customers is its list
    app.include_router(customers_router)
    app.include_router(webhooks_router)
    app.include_router(products_router)
    # Vendor-compatible endpoints (COMPAT.md): the vendors' paths, shapes and errors.
    app.include_router(constructor_router)
    app.include_router(sailthru_router)
    app.include_router(optimove_router)
    app.include_router(emporix_router)
    install_dashboard(app)
    return app


def serve_app(settings: Settings | None = None, *, database: Database | None = None) -> FastAPI:
    """The app as `returnstack serve` runs it (uvicorn's factory, once per worker process):
    `create_app`, then every object made so far (modules, routes, models, schemas: some
    200,000) moved out of the garbage collector's reach with `gc.freeze()`. They live as
    long as the process anyway, and a full collection no longer walks them all: it cost
    ~0.1 s of CPU each, a tenth of the batch ingestion's CPU (bench/README.md)."""
    app = create_app(settings, database=database)
    gc.freeze()
    return app
