"""The framework ceiling for one-event requests: a bare FastAPI app whose POST /v1/events reads
the body, parses and validates it with the service's own code (parse_body + check_batch, the
same pydantic models) and answers the same shape of JSON, writing nothing: no middleware, no
key lookup, no database.

    python -m bench.bare_app --port 8001 [--mode async|sync]

`async` (the ceiling the benchmark compares with) runs the endpoint on the event loop; `sync`
declares it with `def`, as the service's endpoint is, so FastAPI runs it in its thread pool:
the difference between the two is the cost of that thread hop alone.

It is served by uvicorn with the options `returnstack serve` uses (factory app,
access_log=False, log_config=None, server_header=False).
"""

import argparse
import os
from typing import Annotated

import orjson
from fastapi import Depends, FastAPI, Request
from starlette.responses import Response

from returnstack.events.validation import check_batch, parse_body
from returnstack.kit.ids import new_id


def _answer(body: bytes) -> Response:
    batch = check_batch(parse_body(body))
    payload = orjson.dumps(
        {
            "accepted": len(batch.valid),
            "duplicates": 0,
            "rejected": batch.rejected,
            "ids": [new_id("evt") for _ in batch.valid],
        }
    )
    return Response(payload, media_type="application/json")


def create_app() -> FastAPI:
    app = FastAPI(title="bare", openapi_url=None, docs_url=None, redoc_url=None)
    mode = os.environ.get("BENCH_BARE_MODE", "async")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    if mode == "sync":

        async def raw_body(request: Request) -> bytes:
            return await request.body()

        @app.post("/v1/events")
        def post_events_sync(body: Annotated[bytes, Depends(raw_body)]) -> Response:
            return _answer(body)

    else:

        @app.post("/v1/events")
        async def post_events(request: Request) -> Response:
            return _answer(await request.body())

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--mode", choices=["async", "sync"], default="async")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    os.environ["BENCH_BARE_MODE"] = args.mode
    uvicorn.run(
        "bench.bare_app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        access_log=False,
        log_config=None,
        server_header=False,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
