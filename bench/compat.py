"""The adapters benchmark (`python -m bench compat`): the same purchases sent to one server
as POST /v1/events (100 purchases a request), as Constructor offline batches (100 actions a
request) and as Optimove batches (1,000 item events a request), side by side in one run.

Target: each adapter reaches at least 80 % of the purchases/s of /v1/events (COMPAT.md,
issue 10). Every purchase has 3 lines, so purchases/s and lines/s give the same ratios.
The native phase runs before and after the adapters; its mean is the baseline.
"""

import base64
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from bench import harness, loadgen, profile, workload
from bench.harness import console
from bench.server import cli_json, cpu_seconds, fresh_database, process_tree, returnstack_server

RATIO_TARGET = 0.80


def _price(minor: int) -> orjson.Fragment:
    return orjson.Fragment(str(Decimal(minor).scaleb(-2)).encode())


def _seconds(timestamp: str) -> int:
    return int(datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp())


def constructor_action(event: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = {
        "_dt": _seconds(event["timestamp"]),
        "ui": event["customer"]["id"],
        "order_id": event["order_id"],
        "items": [
            {
                "item_id": item["product_id"],
                "variation_id": item["variant_id"],
                "item_name": item["name"],
                "price": _price(item["unit_price"]),
                "count": item["quantity"],
            }
            for item in event["items"]
        ],
        "currency": event["currency"],
    }
    if "store" in event:
        data["store_id"] = event["store"]["id"]
    return {"action": "purchase", "data": data}


def optimove_events(event: dict[str, Any]) -> list[dict[str, Any]]:
    moment = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
    store = event["store"]["id"] if "store" in event else "Online"
    return [
        {
            "tenant": 1,
            "timestamp": moment.strftime("%Y-%m-%d %H:%M:%S.000000 UTC"),
            "event": "ootb_product_order_completed",
            "customer": event["customer"]["id"],
            "context": {
                "ootb_order_id": event["order_id"],
                "ootb_item_order_id": item["line_id"],
                "ootb_product_id": item["product_id"],
                "ootb_variant_id": item["variant_id"],
                "ootb_item_name": item["name"],
                "ootb_category": item["category"],
                "ootb_item_price": _price(item["unit_price"]),
                "ootb_quantity": item["quantity"],
                "ootb_email": event["customer"]["email"],
                "ootb_store_type": store,
                "ootb_currency": event["currency"],
            },
        }
        for item in event["items"]
    ]


def _purchases(phase: str, count: int) -> list[dict[str, Any]]:
    bodies = workload.bodies(phase, events=count, per_request=count)
    return list(orjson.loads(next(bodies))["events"])


def _files(workdir: Path, phase: str, bodies: list[bytes], clients: int) -> list[Path]:
    return workload.write_body_files(workdir / "bodies" / phase, iter(bodies), clients)


def _native(purchases: list[dict[str, Any]]) -> list[bytes]:
    return [orjson.dumps({"events": purchases[i : i + 100]}) for i in range(0, len(purchases), 100)]


def _constructor(purchases: list[dict[str, Any]]) -> list[bytes]:
    actions = [constructor_action(event) for event in purchases]
    return [
        orjson.dumps({"behavioral_actions": actions[i : i + 100]})
        for i in range(0, len(actions), 100)
    ]


def _optimove(purchases: list[dict[str, Any]]) -> list[bytes]:
    items = [item for event in purchases for item in optimove_events(event)]
    return [orjson.dumps(items[i : i + 1000]) for i in range(0, len(items), 1000)]


FORMATS = {
    "native": ("/v1/events", _native),
    "constructor": ("/v1/offline_behavioral_actions?key={pk}", _constructor),
    "optimove": ("/optimove/events/batch", _optimove),
}


@dataclass
class Options(harness.Options):
    purchases: int
    clients: int


def _orders(target: Any) -> int:
    return int(harness.sql(target, "SELECT count(*) FROM orders")[0][0])


def run_backend(backend: str, opts: Options) -> dict[str, Any]:
    started = harness.started_at()
    source = harness.source_state()
    busy = harness.wait_idle(opts.wait_idle) if opts.wait_idle else harness.cpu_busy()
    purchases, clients = opts.purchases, opts.clients
    with fresh_database(backend, opts.postgres_url) as target:
        cli_json(target, "tenants", "create", "bench", "--currency", "EUR")
        secret = str(
            cli_json(target, "keys", "create", "--tenant", "bench", "--kind", "secret")["key"]
        )
        public = str(
            cli_json(target, "keys", "create", "--tenant", "bench", "--kind", "publishable")["key"]
        )
        auth = {
            "native": f"Bearer {secret}",
            "constructor": "Basic " + base64.b64encode(f"{secret}:".encode()).decode(),
            "optimove": f"Bearer {secret}",
        }
        warmup = max(500, purchases // 10)
        phases = ["native", "constructor", "optimove", "native"]
        files = {}
        for index, name in enumerate(phases):
            make = FORMATS[name][1]
            for kind, count in (("w", warmup), ("m", purchases)):
                phase = f"{kind}{index}"
                files[phase] = _files(
                    target.workdir, phase, make(_purchases(phase, count)), clients
                )
        rates: dict[str, list[float]] = {name: [] for name in FORMATS}
        latencies: dict[str, list[float]] = {name: [] for name in FORMATS}
        server_cpu: dict[str, list[list[int]]] = {name: [] for name in FORMATS}
        with returnstack_server(target) as server:
            for index, name in enumerate(phases):
                url = server.base_url + FORMATS[name][0].replace("{pk}", public)
                loadgen.run("python", url, files[f"w{index}"], auth[name])
                before = _orders(target)
                cpu_before = _cpu(server.pid)
                with profile.profiling(server.pid, _raw(opts, backend, name, index)):
                    result = loadgen.run("python", url, files[f"m{index}"], auth[name])
                cpu = [after - was for after, was in zip(_cpu(server.pid), cpu_before, strict=True)]
                recorded = _orders(target) - before
                if result.failures or recorded != purchases:
                    raise RuntimeError(
                        f"{name}: {result.failures} failures ({result.first_failure}); "
                        f"{recorded} of {purchases} orders recorded\n{server.log()}"
                    )
                rate = purchases / result.duration_s
                rates[name].append(round(rate, 1))
                latencies[name].append(round(result.p50_ms, 1))
                server_cpu[name].append([round(seconds / purchases * 1e6) for seconds in cpu])
                console.print(
                    f"  {name:<12} {rate:>8,.0f} purchases/s ({result.requests} requests in "
                    f"{result.duration_s:.1f}s, p50 {result.p50_ms:.0f} ms; CPU a purchase: "
                    f"server {cpu[0] / purchases * 1e6:,.0f} µs, its other processes "
                    f"{cpu[1] / purchases * 1e6:,.0f} µs)"
                )
        machine = harness.machine(target)
    profiles = {}
    if opts.profile_dir is not None:
        for index, name in enumerate(phases):
            raw = _raw(opts, backend, name, index)
            assert raw is not None
            profiles[f"{name}{index}"] = profile.summarize(raw, top=25) | {"raw": str(raw)}
    baseline = sum(rates["native"]) / len(rates["native"])
    targets = {
        f"{name}_ratio": {
            "target": RATIO_TARGET,
            "value": round(rates[name][0] / baseline, 3),
            "met": rates[name][0] / baseline >= RATIO_TARGET,
        }
        for name in ("constructor", "optimove")
    }
    return {
        "benchmark": "compat",
        "backend": backend,
        "started_at": started,
        "command": opts.command,
        "source": source,
        "machine": machine,
        "cpu_busy_before_start": round(busy, 3),
        "purchases_per_phase": purchases,
        "lines_per_purchase": 3,
        "clients": clients,
        "purchases_per_s": rates,
        "p50_ms": latencies,
        # µs of CPU a purchase: the server process, and its other processes (the webhook
        # dispatcher's) together.
        "cpu_us_per_purchase": server_cpu,
        "targets": targets,
        "profiled": opts.profile_dir is not None,
        **({"profile": profiles} if profiles else {}),
    }


def _cpu(pid: int) -> tuple[float, float]:
    """CPU seconds so far of the server process, and of its descendants alive now."""
    server = cpu_seconds(pid)
    others = 0.0
    for member in process_tree(pid)[1:]:
        try:
            others += cpu_seconds(member)
        except OSError:  # ended meanwhile
            continue
    return server, others


def _raw(opts: Options, backend: str, name: str, index: int) -> Path | None:
    """Where py-spy writes the raw stacks of a measured phase, when profiling."""
    if opts.profile_dir is None:
        return None
    return opts.profile_dir / f"{backend}-{index}-{name}.txt"


def show(result: dict[str, Any]) -> None:
    harness.print_profile(result.get("profile", {}), kinds=("inclusive", "self", "self_lines"))


def render_one(result: dict[str, Any]) -> str:
    machine, rates = result["machine"], result["purchases_per_s"]
    native = ", ".join(f"{rate:,.0f}" for rate in rates["native"])
    lines = [
        f"#### {harness.NAMES[result['backend']]}",
        "",
        f"Run of {result['started_at']}: `{result['command']}` ({machine['cpus']} cores, "
        f"{machine['cpu_model'] or 'unknown CPU'}, shared by the server, the database and the "
        f"load generator; {harness.engine(machine)}; Python {machine['python']}; source at the "
        f"start {result['source']['commit']}{harness.dirty(result['source'])}; other "
        f"processes kept {result['cpu_busy_before_start']:.0%} of the cores busy just before "
        f"the run). {result['purchases_per_phase']:,} purchases of 3 lines per format, "
        f"{result['clients']} clients.",
        "",
        "| format | purchases/s | ratio to /v1/events | target |",
        "|---|---:|---:|---|",
        f"| `/v1/events`, 100 purchases a request (before, after) | {native} | 1 | |",
    ]
    for name, label in (
        ("constructor", "Constructor offline batches, 100 actions a request"),
        ("optimove", "Optimove batches, 1,000 item events a request"),
    ):
        target = result["targets"][f"{name}_ratio"]
        lines.append(
            f"| {label} | {rates[name][0]:,.0f} | {target['value']:.2f} | "
            f"≥ {target['target']:.2f}: {harness.verdict(target)} |"
        )
    lines.append("")
    return "\n".join(lines)


BENCH = harness.Benchmark("compat", "compat", "Vendor adapters", render_one)


def cli(argv: list[str]) -> int:
    parser = harness.parser(
        BENCH,
        __doc__.splitlines()[0],
        quick="2,000 purchases per format; results not recorded",
        profile="py-spy the server during each measured phase (raw stacks into DIR); "
        "figures not recorded",
    )
    parser.add_argument("--purchases", type=int, help="measured per format (default 20000)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients (default 4)")
    args = parser.parse_args(argv)
    opts = Options(
        **harness.common(BENCH, args, argv),
        purchases=args.purchases or (2_000 if args.quick else 20_000),
        clients=args.clients,
    )
    return harness.run(BENCH, opts, lambda backend: run_backend(backend, opts), show)
