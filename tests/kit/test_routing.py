"""Every API route renders its response in the endpoint's thread (kit/routing.py): a sync
endpoint's database session must not wait for a second thread while it holds a connection,
or an overloaded server stalls for good (all threads waiting for connections held by
sessions waiting for threads)."""

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import BaseModel
from starlette.responses import Response

from returnstack.kit.routing import RenderInThreadRoute


def api_routes(app: FastAPI) -> list[APIRoute]:
    routes = []
    for entry in app.routes:
        router = getattr(entry, "original_router", None)  # FastAPI's included routers
        for route in router.routes if router is not None else [entry]:
            if isinstance(route, APIRoute):
                routes.append(route)
    return routes


def test_every_api_route_renders_in_its_thread(app: FastAPI) -> None:
    routes = api_routes(app)
    assert len(routes) > 30
    assert [r.path for r in routes if not isinstance(r, RenderInThreadRoute)] == []


class Thing(BaseModel):
    name: str
    at: datetime


def test_the_response_is_the_one_fastapi_would_render_and_made_in_the_thread() -> None:
    def endpoint() -> Any:
        return {"name": "tee", "at": datetime(2026, 11, 2, 14, 3, tzinfo=UTC), "secret": 1}

    plain, rendered = APIRouter(), APIRouter(route_class=RenderInThreadRoute)
    plain.add_api_route("/plain", endpoint, response_model=Thing, status_code=201)
    rendered.add_api_route("/rendered", endpoint, response_model=Thing, status_code=201)
    app = FastAPI()
    app.include_router(plain)
    app.include_router(rendered)
    client = TestClient(app)
    expected, got = client.get("/plain"), client.get("/rendered")
    assert (got.status_code, got.content) == (expected.status_code, expected.content)
    assert got.json() == {"name": "tee", "at": "2026-11-02T14:03:00Z"}
    # The endpoint itself (run in the thread pool) already answers a rendered response.
    route = next(r for r in rendered.routes if isinstance(r, APIRoute))
    assert isinstance(route.endpoint(), Response)
