"""Benchmarks of returnstack, run against a real server process (see bench/README.md).

.venv/bin/python -m bench ingest [--backend sqlite|postgresql|both] [--events N]
                                 [--clients C] [--quick]
"""
