"""`python -m bench <benchmark> [options]`; see bench/README.md."""

import importlib
import sys

BENCHMARKS = {
    "ingest": "ingestion: batches vs the database ceiling, one-event requests, memory",
    "returns": "returns lifecycle: create, approve, receive, refund, close at a fixed rate",
    "profiles": "customer profiles: lookups, a segment count, CSV export on 1 M customers",
    "webhooks": "webhook deliveries per second of one dispatcher; commit-to-delivery delay",
    "products": "product signals: upkeep cost on ingestion, kept vs derived reads, reports",
    "products_scale": "product signals on the 10 M-line set: rankings, stats, reports by HTTP",
    "compat": "vendor adapters: Constructor and Optimove batches vs /v1/events, side by side",
    "dashboard": "dashboard pages: each page's answer time on the demo data, signed in",
}
README = "readme"  # rewrite every benchmark's figures in README.md from bench/results/


def main(argv: list[str]) -> int:
    if argv[:1] == [README]:
        for name in BENCHMARKS:
            importlib.import_module(f"bench.{name}").BENCH.update_readme()
        return 0
    if not argv or argv[0] in ("-h", "--help", "help") or argv[0] not in BENCHMARKS:
        print("usage: python -m bench <benchmark> [options]   (<benchmark> --help for its options)")
        for name, what in BENCHMARKS.items():
            print(f"  {name:<10} {what}")
        print(f"  {README:<10} rewrite the figures in bench/README.md from bench/results/")
        return 0 if not argv or argv[0] in ("-h", "--help", "help") else 2
    code: int = importlib.import_module(f"bench.{argv[0]}").cli(argv[1:])
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
