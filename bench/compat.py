"""The adapters benchmark (`python -m bench compat`): the same purchases sent to one server
as POST /v1/events (100 purchases a request), as Constructor offline batches (100 actions a
request) and as Optimove batches (1,000 item events a request), side by side in one run.

Target: each adapter reaches at least 80 % of the purchases/s of /v1/events (COMPAT.md,
issue 10). Every purchase has 3 lines, so purchases/s and lines/s give the same ratios.
The native phase runs before and after the adapters; its mean is the baseline.
"""

import argparse
import base64
import json
import time
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console

from bench import ceiling, loadgen, workload
from bench.server import DEFAULT_POSTGRES_URL, cli_json, fresh_database, returnstack_server

RESULTS = Path(__file__).resolve().parent / "results"
RATIO_TARGET = 0.80
console = Console()


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


def run_backend(backend: str, purchases: int, clients: int, postgres_url: str) -> dict[str, Any]:
    with fresh_database(backend, postgres_url) as target:
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
            files[f"w{index}"] = _files(
                target.workdir, f"w{index}", make(_purchases(f"w{index}", warmup)), clients
            )
            files[f"m{index}"] = _files(
                target.workdir, f"m{index}", make(_purchases(f"m{index}", purchases)), clients
            )
        results: dict[str, list[float]] = {name: [] for name in FORMATS}
        with returnstack_server(target) as server:
            for index, name in enumerate(phases):
                url = server.base_url + FORMATS[name][0].replace("{pk}", public)
                loadgen.run("python", url, files[f"w{index}"], auth[name])
                before = ceiling.count_rows(target)["orders"]
                result = loadgen.run("python", url, files[f"m{index}"], auth[name])
                recorded = ceiling.count_rows(target)["orders"] - before
                if result.failures or recorded != purchases:
                    raise RuntimeError(
                        f"{name}: {result.failures} failures ({result.first_failure}); "
                        f"{recorded} of {purchases} orders recorded\n{server.log()}"
                    )
                rate = purchases / result.duration_s
                results[name].append(rate)
                console.print(
                    f"  {backend} {name:<12} {rate:>8,.0f} purchases/s "
                    f"({result.requests} requests in {result.duration_s:.1f}s, "
                    f"p50 {result.p50_ms:.0f} ms)"
                )
    baseline = sum(results["native"]) / len(results["native"])
    ratios = {name: round(results[name][0] / baseline, 3) for name in ("constructor", "optimove")}
    return {
        "backend": backend,
        "purchases_per_phase": purchases,
        "lines_per_purchase": 3,
        "clients": clients,
        "purchases_per_s": {
            name: [round(rate) for rate in rates] for name, rates in results.items()
        },
        "ratio_to_native": ratios,
        "target": RATIO_TARGET,
        "met": all(ratio >= RATIO_TARGET for ratio in ratios.values()),
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench compat", description=__doc__)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--purchases", type=int, default=20_000, help="measured, per format")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    args = parser.parse_args(argv)
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    met = True
    RESULTS.mkdir(exist_ok=True)
    for backend in backends:
        result = run_backend(backend, args.purchases, args.clients, args.postgres_url)
        (RESULTS / f"compat-{backend}.json").write_text(json.dumps(result, indent=2) + "\n")
        console.print(f"  {backend}: ratios to /v1/events {result['ratio_to_native']}")
        met = met and result["met"]
    return 0 if met else 1
