"""The dashboard benchmark (`python -m bench dashboard`): how long each dashboard page takes
to answer on the demo data (`returnstack demo`: 3,000 orders, their returns, 60 returns
worked through the lifecycle), signed in as the demo's admin, against a real server process.

Two webhooks (to a receiver on loopback) get every demo message with `recover`: one answers
200, the other 410 (so it is disabled and its deliveries fail); the dispatcher is idle before
the measurements start. Each page is fetched one request at a time by one client, after
warm-up requests; the time is from sending the request to the last byte of the answer.
Insights keeps its figures until the tenant's data changes, so it is timed twice: seen
again, and first seen after a sale (one purchase posted before each timed request).

The baseline, measured the same way in the same run, is GET /healthz (the framework and a
thread, no database). Target (issue 13): every page's median under 100 ms.
"""

import statistics
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from bench import harness, workload
from bench.harness import console
from bench.server import cli_json, fresh_database, returnstack_server

TARGET_MS = 100.0
INSIGHTS_COLD = "insights (first look after a sale)"


class Receiver:
    """Webhook receiver on loopback: /ok answers 200, /gone 410 (the webhook is disabled)."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", "0")))
                self.send_response(200 if self.path == "/ok" else 410)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@dataclass
class Options(harness.Options):
    requests: int
    orders: int


def _sign_in(http: httpx.Client, email: str, password: str) -> None:
    page = http.get("/dashboard/login")
    token = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    answer = http.post(
        "/dashboard/login", data={"csrf_token": token, "email": email, "password": password}
    )
    if answer.status_code != 303:
        raise RuntimeError(f"sign-in failed: {answer.status_code} {answer.text[:300]}")


def _pages(api: httpx.Client, hooks: list[str]) -> dict[str, str]:
    """The pages to time, by name: the demo's busiest return and customer, and so on."""
    returns = api.get("/v1/returns", params={"limit": 100}).json()["data"]
    busiest = max(returns, key=lambda ret: (len(ret["history"]), len(ret["items"])))
    requested = next((ret for ret in returns if ret["status"] == "requested"), busiest)
    customer = next(
        ret["customer"]["id"] for ret in returns if ret["customer"] and ret["customer"]["id"]
    )
    return {
        "returns list": "/dashboard/returns",
        "returns list, a queue": "/dashboard/returns?status=received&queue=oldest",
        "returns list, a search": "/dashboard/returns?q=cust_002",
        "a return (most history)": f"/dashboard/returns/{busiest['number']}",
        "an action form (approve)": f"/dashboard/returns/{requested['number']}/approve",
        "new return for a customer": f"/dashboard/returns/new?customer_id={customer}",
        "customers": "/dashboard/customers",
        "customers, a segment": "/dashboard/customers?where=returns+%3E+1",
        "a customer": f"/dashboard/customers/profile?id={customer}",
        "insights": "/dashboard/insights",
        "settings": "/dashboard/settings",
        "a webhook (its deliveries)": f"/dashboard/settings/webhooks/{hooks[0]}",
        "a webhook, failed deliveries": f"/dashboard/settings/webhooks/{hooks[1]}?status=failed",
    }


def _time(http: httpx.Client, path: str, requests: int, before: Any = None) -> dict[str, float]:
    for _ in range(3):  # warm-up
        http.get(path)
    times = []
    for _ in range(requests):
        if before is not None:
            before()  # not timed
        started = time.perf_counter()
        answer = http.get(path)
        times.append((time.perf_counter() - started) * 1000)
        if answer.status_code != 200:
            raise RuntimeError(f"{path}: {answer.status_code} {answer.text[:300]}")
    times.sort()
    return {
        "p50_ms": round(statistics.median(times), 1),
        "p90_ms": round(times[max(0, int(len(times) * 0.9) - 1)], 1),
    }


def _settle(target: Any, timeout_s: float = 300) -> int:
    """Wait until no delivery is pending (the dispatcher is idle); how many rows there are."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pending = harness.sql(
            target, "SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'"
        )[0][0]
        if not pending:
            break
        time.sleep(1)
    return int(harness.sql(target, "SELECT count(*) FROM webhook_deliveries")[0][0])


def run_backend(backend: str, opts: Options) -> dict[str, Any]:
    started = harness.started_at()
    source = harness.source_state()
    busy = harness.wait_idle(opts.wait_idle) if opts.wait_idle else harness.cpu_busy()
    receiver = Receiver()
    try:
        with fresh_database(backend, opts.postgres_url) as target:
            console.print(f"  loading the demo data ({opts.orders:,} orders) …")
            demo = cli_json(target, "demo", "--no-serve", "--orders", str(opts.orders))
            dashboard: Any = demo["dashboard"]
            server = returnstack_server(target)
            server.env["RETURNSTACK_WEBHOOKS_ALLOW_PRIVATE"] = "true"
            with server:
                auth = {"Authorization": f"Bearer {demo['secret_key']}"}
                with httpx.Client(base_url=server.base_url, headers=auth, timeout=60) as api:
                    hooks = []
                    for path in ("/ok", "/gone"):
                        made = api.post(
                            "/v1/webhooks", json={"url": receiver.base + path, "events": ["*"]}
                        )
                        made.raise_for_status()
                        hooks.append(made.json()["id"])
                        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600))
                        api.post(
                            f"/v1/webhooks/{hooks[-1]}/recover", json={"since": since}
                        ).raise_for_status()
                    deliveries = _settle(target)
                    pages = _pages(api, hooks)
                console.print(f"  {deliveries:,} webhook delivery rows; timing the pages …")
                with httpx.Client(base_url=server.base_url, timeout=60) as http:
                    _sign_in(http, dashboard["email"], dashboard["password"])
                    baseline = _time(http, "/healthz", opts.requests)
                    figures: dict[str, dict[str, Any]] = {}
                    sales = workload.bodies("dashboard", events=10_000, per_request=1)
                    with httpx.Client(base_url=server.base_url, headers=auth) as api:

                        def sell() -> None:
                            api.post("/v1/events", content=next(sales)).raise_for_status()

                        for name, path in pages.items():
                            # Insights keeps its figures until the data changes: timed
                            # both as seen again and as first seen after a sale.
                            runs: list[tuple[str, Any]] = [(name, None)]
                            if name == "insights":
                                runs = [("insights (seen again)", None), (INSIGHTS_COLD, sell)]
                            for label, before in runs:
                                figures[label] = _time(http, path, opts.requests, before)
                                figures[label]["path"] = path
                                console.print(
                                    f"  {label:<34} p50 {figures[label]['p50_ms']:>6.1f} ms, "
                                    f"p90 {figures[label]['p90_ms']:>6.1f} ms"
                                )
            machine = harness.machine(target)
    finally:
        receiver.server.shutdown()
    for page in figures.values():
        page["ratio_to_baseline"] = round(page["p50_ms"] / max(baseline["p50_ms"], 0.1), 1)
    slowest = max(figures, key=lambda name: figures[name]["p50_ms"])
    return {
        "benchmark": "dashboard",
        "backend": backend,
        "started_at": started,
        "command": opts.command,
        "source": source,
        "machine": machine,
        "cpu_busy_before_start": round(busy, 3),
        "demo_orders": opts.orders,
        "webhook_delivery_rows": deliveries,
        "requests_per_page": opts.requests,
        "baseline_healthz": baseline,
        "pages": figures,
        "targets": {
            "slowest_page_p50_ms": {
                "target": TARGET_MS,
                "value": figures[slowest]["p50_ms"],
                "page": slowest,
                "met": figures[slowest]["p50_ms"] < TARGET_MS,
            }
        },
    }


def render_one(result: dict[str, Any]) -> str:
    machine, baseline = result["machine"], result["baseline_healthz"]
    target = result["targets"]["slowest_page_p50_ms"]
    lines = [
        f"#### {harness.NAMES[result['backend']]}",
        "",
        f"Run of {result['started_at']}: `{result['command']}` ({machine['cpus']} cores, "
        f"{machine['cpu_model'] or 'unknown CPU'}, shared by the server, the database and the "
        f"client; {harness.engine(machine)}; Python {machine['python']}; source at the start "
        f"{result['source']['commit']}{harness.dirty(result['source'])}; other processes kept "
        f"{result['cpu_busy_before_start']:.0%} of the cores busy just before the run). Demo "
        f"data of {result['demo_orders']:,} orders, {result['webhook_delivery_rows']:,} webhook "
        f"delivery rows; {result['requests_per_page']} requests per page, one at a time. "
        f"Baseline GET /healthz: p50 {baseline['p50_ms']:.1f} ms.",
        "",
        "| page | p50 ms | p90 ms | p50 / baseline |",
        "|---|---:|---:|---:|",
    ]
    for name, page in result["pages"].items():
        lines.append(
            f"| {name} | {page['p50_ms']:.1f} | {page['p90_ms']:.1f} | "
            f"{page['ratio_to_baseline']:.1f} |"
        )
    lines += [
        "",
        f"Slowest page ({target['page']}): median {target['value']:.1f} ms, target "
        f"< {target['target']:.0f} ms: {harness.verdict(target)}.",
        "",
    ]
    return "\n".join(lines)


BENCH = harness.Benchmark("dashboard", "dashboard", "Dashboard pages", render_one)


def cli(argv: list[str]) -> int:
    parser = harness.parser(
        BENCH,
        __doc__.splitlines()[0],
        quick="300 demo orders, 5 requests per page; results not recorded",
        profile="not supported by this benchmark",
    )
    parser.add_argument("--requests", type=int, help="timed requests per page (default 30)")
    parser.add_argument("--orders", type=int, help="demo orders (default 3000, the demo's)")
    args = parser.parse_args(argv)
    opts = Options(
        **harness.common(BENCH, args, argv),
        requests=args.requests or (5 if args.quick else 30),
        orders=args.orders or (300 if args.quick else 3000),
    )
    return harness.run(BENCH, opts, lambda backend: run_backend(backend, opts))
