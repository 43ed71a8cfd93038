import logging
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
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


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={503: {"description": "The database is unreachable (the reason is logged)."}},
)
def readyz(request: Request) -> Any:
    """The database answers."""
    db: Database = request.app.state.db
    try:
        with db.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:  # any driver error means not ready
        # Why goes to the log only: a driver's message names hosts, users, paths.
        log.warning("readyz.unavailable", extra={"error": f"{type(exc).__name__}: {exc}"[:1000]})
        return JSONResponse(UNAVAILABLE, status_code=503)
    return {"status": "ok"}


@router.get("/metrics", response_class=Response)
def metrics(request: Request) -> Response:
    """Prometheus text format. The outbox backlog is read from the database at scrape time."""
    db: Database = request.app.state.db
    backlog: int | None
    try:
        with db.session() as session:
            backlog = session.scalar(
                select(func.count())
                .select_from(OutboxEvent)
                .where(OutboxEvent.dispatched_at.is_(None))
            )
    except Exception:
        backlog = None
    body = generate_latest(REGISTRY)
    if backlog is not None:
        body += (
            b"# HELP returnstack_outbox_backlog Domain events not yet dispatched.\n"
            b"# TYPE returnstack_outbox_backlog gauge\n"
            + f"returnstack_outbox_backlog {backlog}\n".encode()
        )
    return Response(body, media_type=CONTENT_TYPE_LATEST)
