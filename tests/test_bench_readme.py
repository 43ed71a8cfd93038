"""bench/README.md shows the recorded results: every figures section is exactly what the
harness renders from bench/results/*.json, so no figure in them is typed by hand or left
behind by a results file that changed."""

import shutil
from pathlib import Path

import pytest

from bench import compat, dashboard, harness, ingest, profiles, returns, webhooks

BENCHMARKS = [
    ingest.BENCH,
    returns.BENCH,
    profiles.BENCH,
    compat.BENCH,
    webhooks.BENCH,
    dashboard.BENCH,
]


@pytest.mark.parametrize("bench", BENCHMARKS, ids=lambda bench: bench.name)
def test_figures_section_is_rendered_from_the_results(
    bench: harness.Benchmark, tmp_path: Path
) -> None:
    readme = tmp_path / "README.md"
    shutil.copy(harness.README, readme)
    bench.update_readme(readme)
    assert readme.read_text() == harness.README.read_text(), (
        f"the {bench.marker} section of bench/README.md differs from its results: "
        "run `./dev bench readme`"
    )


def test_every_benchmark_has_its_markers_once() -> None:
    text = harness.README.read_text()
    for bench in BENCHMARKS:
        assert text.count(bench.begin) == 1, bench.name
        assert text.count(bench.end) == 1, bench.name
