"""`python -m bench <benchmark> [options]`; see bench/README.md."""

import sys

BENCHMARKS = {"ingest": "ingestion: batches vs the database ceiling, one-event requests, memory"}


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help") or argv[0] not in BENCHMARKS:
        print("usage: python -m bench <benchmark> [options]   (<benchmark> --help for its options)")
        for name, what in BENCHMARKS.items():
            print(f"  {name:<10} {what}")
        return 0 if not argv or argv[0] in ("-h", "--help", "help") else 2
    from bench import ingest

    return ingest.cli(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
