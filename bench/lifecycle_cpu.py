"""Server CPU per lifecycle action, in-process (`python -m bench.lifecycle_cpu`): a quick
before/after comparison that a shared machine does not blur, as throughput figures are.

On one fresh database (N orders loaded as `python -m bench returns` loads them), rounds of R
returns each are taken through create, approve, receive, refund, close, then read (GET
/v1/returns/{id}) and listed (GET /v1/returns?limit=20), one request at a time, by a worker
process calling the ASGI app directly (no HTTP, no client library): the CPU time of the
process (time.process_time, every thread) per request, by action. With `--before SRC`, each
round runs once on that source tree (e.g. `git archive main src | tar -x -C /tmp/before`) and
once on this one, alternately, on the same database: their ratio is the comparison. With
`--profile DIR`, each worker runs the app in one thread under cProfile and writes its stats.
Figures are printed, never recorded.
"""

import argparse
import asyncio
import cProfile
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from bench import inprocess

ROOT = Path(__file__).resolve().parent.parent
STEPS = ("create", "approve", "receive", "refund", "close", "read", "list")


async def _call(app: Any, method: str, target: str, body: bytes, auth: str) -> tuple[int, bytes]:
    path, _, query = target.partition("?")
    headers = [
        (b"host", b"bench"),
        (b"authorization", auth.encode()),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    return await inprocess.call(app, (method, path, query.encode(), headers, body))


def _requests(customer: int) -> list[tuple[str, str, str, bytes, int]]:
    from bench.returns import customer_id, order_id

    orders = (order_id(2 * customer), order_id(2 * customer + 1))
    items = [
        {"order_id": o, "line_id": "1", "quantity": 1, "reason": "color", "resolution": "refund"}
        for o in orders
    ]
    create = {"customer": {"id": customer_id(customer)}, "channel": "online", "items": items}
    receive = {"items": [{"order_id": o, "line_id": "1", "quantity": 1} for o in orders]}
    return [
        ("create", "POST", "/v1/returns", orjson.dumps(create), 201),
        ("approve", "POST", "/v1/returns/{id}/approve", b"{}", 200),
        ("receive", "POST", "/v1/returns/{id}/receive", orjson.dumps(receive), 200),
        ("refund", "POST", "/v1/returns/{id}/refund", b'{"method":"original_payment"}', 200),
        ("close", "POST", "/v1/returns/{id}/close", b"{}", 200),
        ("read", "GET", "/v1/returns/{id}", b"", 200),
        ("list", "GET", "/v1/returns?limit=20", b"", 200),
    ]


def worker(url: str, auth: str, customers: list[int], profile: str | None) -> dict[str, Any]:
    import anyio.to_thread

    from returnstack.app import create_app
    from returnstack.config import Settings

    if profile:  # one thread, so that cProfile sees the endpoints' work too

        async def inline(func: Any, *args: Any, **_: Any) -> Any:
            return func(*args)

        setattr(anyio.to_thread, "run_sync", inline)  # noqa: B010
    settings = Settings(
        database_url=url,
        rate_limit_per_second=0,
        log_requests=False,
        webhooks_dispatcher=False,
        # CPU, not overload: a loaded machine may keep a request from a thread for long.
        admission_max_wait=0,
        _env_file=None,
    )
    app = create_app(settings)
    cpu: dict[str, list[float]] = {step: [] for step in STEPS}
    # CPU time, not wall: the waits for the database are not the server's work.
    profiler = cProfile.Profile(time.process_time) if profile else None

    async def main() -> None:
        warm = min(10, len(customers) // 5)
        for index, customer in enumerate(customers):
            return_id = ""
            for step, method, target, body, expected in _requests(customer):
                if profiler and index >= warm:
                    profiler.enable()
                began = time.process_time()
                status, answer = await _call(app, method, target.format(id=return_id), body, auth)
                spent = time.process_time() - began
                if profiler:
                    profiler.disable()
                if status != expected:
                    raise RuntimeError(f"{step}: {status} {answer[:500]!r}")
                if step == "create":
                    return_id = orjson.loads(answer)["id"]
                if index >= warm:
                    cpu[step].append(spent)

    asyncio.run(main())
    app.state.db.dispose()
    if profiler and profile:
        profiler.dump_stats(profile)
    return {step: 1e6 * statistics.mean(values) for step, values in cpu.items() if values}


def orchestrate(args: argparse.Namespace) -> None:
    from bench import harness
    from bench.returns import load_orders
    from bench.server import DEFAULT_POSTGRES_URL, fresh_database

    trees = {"this": str(ROOT / "src")}
    if args.before:
        trees = {"before": str(Path(args.before).resolve()), **trees}
    with fresh_database(args.backend, args.postgres_url or DEFAULT_POSTGRES_URL) as target:
        tenant_id, auth = harness.bench_tenant(target, "EUR")
        load_orders(target, tenant_id, args.orders)
        figures: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
        next_customer = 0
        for round_number in range(args.rounds):
            for name, src in trees.items():
                if args.backend == "postgresql":
                    # Statistics as autovacuum keeps them (it is off on this machine's
                    # PostgreSQL): those of the returns written so far, not of empty tables.
                    harness.vacuum_analyze_loaded(target)
                customers = list(range(next_customer, next_customer + args.returns))
                next_customer += args.returns
                command = [sys.executable, "-m", "bench.lifecycle_cpu", "--worker", target.url]
                command += ["--auth", auth, "--customers", f"{customers[0]}:{customers[-1] + 1}"]
                if args.profile:
                    Path(args.profile).mkdir(parents=True, exist_ok=True)
                    command += ["--profile", f"{args.profile}/{args.backend}-{name}.prof"]
                env = dict(os.environ, PYTHONPATH=f"{src}:{ROOT}")
                env["RETURNSTACK_DATA_DIR"] = str(target.workdir / "data")
                output = subprocess.run(
                    command, env=env, cwd=ROOT, check=True, capture_output=True, text=True
                ).stdout
                figures[name].append(json.loads(output.strip().splitlines()[-1]))
                print(f"round {round_number + 1} {name}: {figures[name][-1]}", file=sys.stderr)
    print(
        f"{args.backend}, {args.orders:,} orders, {args.rounds} x {args.returns} returns each; "
        f"server CPU µs per request (median of the rounds' means); load {os.getloadavg()}"
    )
    ratio_title = "   ratio" if args.before else ""
    print(f"{'action':<8}" + "".join(f"{name:>10}" for name in trees) + ratio_title)
    for step in STEPS:
        values = [statistics.median(run[step] for run in figures[name]) for name in trees]
        ratio = f"{values[1] / values[0]:8.2f}" if args.before else ""
        print(f"{step:<8}" + "".join(f"{v:10.0f}" for v in values) + ratio)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.lifecycle_cpu", description=__doc__)
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--postgres-url")
    parser.add_argument("--orders", type=int, default=20_000)
    parser.add_argument("--returns", type=int, default=150, help="returns a round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", metavar="SRC", help="the other source tree (its src/)")
    parser.add_argument("--profile", metavar="DIR", help="cProfile stats of each worker")
    parser.add_argument("--worker", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--auth", help=argparse.SUPPRESS)
    parser.add_argument("--customers", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        first, _, end = args.customers.partition(":")
        customers = list(range(int(first), int(end)))
        print(json.dumps(worker(args.worker, args.auth, customers, args.profile)))
        return 0
    needed = args.rounds * args.returns * (2 if args.before else 1)
    if needed > args.orders // 2:
        parser.error(f"{needed} returns need {needed * 2} orders")
    orchestrate(args)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
