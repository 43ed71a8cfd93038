"""Health and metrics. These answer under overload: async, on threads of their own (never
behind the API's requests in the thread pool), and never refused (kit/admission.py)."""

import asyncio
import logging
import os
import weakref
from datetime import UTC, datetime
from typing import Any

from anyio import CapacityLimiter, to_thread
from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from sqlalchemy import func, select, text

from returnstack.kit.db import Database
from returnstack.kit.metrics import REGISTRY
from returnstack.kit.responses import JSONResponse
from returnstack.kit.routing import RenderInThreadRoute
from returnstack.models import OutboxEvent

router = APIRouter(route_class=RenderInThreadRoute, tags=["operations"])
log = logging.getLogger("returnstack.health")

UNAVAILABLE = {
    "status": "unavailable",
    "error": {"type": "unavailable", "message": "unavailable", "details": []},
}


_limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, CapacityLimiter] = (
    weakref.WeakKeyDictionary()
)


def _own_threads() -> CapacityLimiter:
    """The threads of these routes (two, per event loop), beside the API's thread pool."""
    loop = asyncio.get_running_loop()
    limiter = _limiters.get(loop)
    if limiter is None:
        limiter = _limiters[loop] = CapacityLimiter(2)
    return limiter


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={503: {"description": "The database is unreachable (the reason is logged)."}},
)
async def readyz(request: Request) -> Any:
    """The database answers."""
    return await to_thread.run_sync(_ready, request.app.state.db, limiter=_own_threads())


def _ready(db: Database) -> Any:
    try:
        with db.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:  # any driver error means not ready
        # Why goes to the log only: a driver's message names hosts, users, paths.
        log.warning("readyz.unavailable", extra={"error": f"{type(exc).__name__}: {exc}"[:1000]})
        return JSONResponse(UNAVAILABLE, status_code=503)
    return {"status": "ok"}


def _registry() -> CollectorRegistry:
    """This process's metrics, or, under `serve --workers N` (prometheus_client's
    multiprocess mode, PROMETHEUS_MULTIPROC_DIR set by `serve`), the sums of every worker's,
    whichever worker answers the scrape."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus text format. Backlogs are read from the database at scrape time."""
    return await to_thread.run_sync(_metrics, request.app.state.db, limiter=_own_threads())


def _metrics(db: Database) -> Response:
    from returnstack.webhooks.repository import pending_deliveries

    gauges: list[tuple[str, str, float]] = []
    try:
        with db.session() as session:
            backlog = session.scalar(
                select(func.count())
                .select_from(OutboxEvent)
                .where(OutboxEvent.dispatched_at.is_(None))
            )
            pending, oldest = pending_deliveries(session)
        age = (datetime.now(UTC) - oldest).total_seconds() if oldest is not None else 0.0
        gauges = [
            (
                "returnstack_outbox_backlog",
                "Domain events committed but not yet published (feed and webhooks).",
                float(backlog or 0),
            ),
            (
                "returnstack_webhook_backlog",
                "Webhook delivery attempts queued (due or scheduled).",
                float(pending),
            ),
            (
                "returnstack_webhook_oldest_undelivered_age_seconds",
                "Age of the oldest message not yet published or with a queued attempt.",
                max(age, 0.0),
            ),
        ]
    except Exception:
        gauges = []
    body = generate_latest(_registry())
    for name, help_text, value in gauges:
        body += (f"# HELP {name} {help_text}\n# TYPE {name} gauge\n{name} {value}\n").encode()
    return Response(body, media_type=CONTENT_TYPE_LATEST)
