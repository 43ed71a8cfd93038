"""`python -m bench <benchmark> [options]`; see bench/README.md."""

import sys

BENCHMARKS = {
    "ingest": "ingestion: batches vs the database ceiling, one-event requests, memory",
    "returns": "returns lifecycle: create, approve, receive, refund, close at a fixed rate",
    "profiles": "customer profiles: lookups, a segment count, CSV export on 1 M customers",
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help") or argv[0] not in BENCHMARKS:
        print("usage: python -m bench <benchmark> [options]   (<benchmark> --help for its options)")
        for name, what in BENCHMARKS.items():
            print(f"  {name:<10} {what}")
        return 0 if not argv or argv[0] in ("-h", "--help", "help") else 2
    if argv[0] == "returns":
        from bench import returns

        return returns.cli(argv[1:])
    if argv[0] == "profiles":
        from bench import profiles

        return profiles.cli(argv[1:])
    from bench import ingest

    return ingest.cli(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
