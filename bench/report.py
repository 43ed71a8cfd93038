"""The figures of the last full runs (bench/results/ingest-*.json) as Markdown, written into
README.md between the figures markers, so the README always shows the recorded results."""

import json
from pathlib import Path
from typing import Any

BEGIN = "<!-- figures:begin (written by `python -m bench ingest` from bench/results/) -->"
END = "<!-- figures:end -->"
NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


def _pct(value: float) -> str:
    return f"{value:.0%}" if value >= 0.1 else f"{value:.1%}"


def _verdict(target: dict[str, Any] | None) -> str:
    if target is None:
        return "(no target)"
    return "**met**" if target["met"] else "**not met**"


def render_one(result: dict[str, Any]) -> str:
    backend = NAMES.get(result["backend"], result["backend"])
    machine = result["machine"]
    targets = result["targets"]
    ratios = result["ratios"]
    batch, roof, single, memory = (
        result["batch"],
        result["ceiling"],
        result["single"],
        result["memory"],
    )
    service, bare, bare_sync = (
        single["service"],
        single["bare_fastapi_async"],
        single["bare_fastapi_sync"],
    )
    engine = (
        f"SQLite {machine.get('sqlite')}"
        if "sqlite" in machine
        else f"PostgreSQL {machine.get('postgresql')}"
    )
    single_target = targets.get("single_ratio")
    rows_written = batch.get("rows_written") or round(
        sum(batch["rows_per_event"].values()) * batch["events"]
    )
    lines = [
        f"### {backend}",
        "",
        f"Run of {result['started_at']}: `{result['command']}` "
        f"({machine['cpus']} cores, {machine['cpu_model'] or 'unknown CPU'}; {engine}; "
        f"Python {machine['python']}; load generator {result['load_generator']['tool']} with "
        f"{result['load_generator']['clients']} connections; source {result['source']['commit']}"
        f"{' + uncommitted changes in src/' if result['source']['src_dirty'] else ''}; "
        f"other processes kept {result['cpu_busy_before_start']:.0%} of the cores busy "
        "just before the run).",
        "",
        "| ratio (same run) | value | target | |",
        "| --- | ---: | ---: | --- |",
        f"| batch ingestion: service events/s ÷ ceiling events/s | "
        f"**{_pct(ratios['batch_vs_ceiling'])}** | ≥ {_pct(targets['batch_ratio']['target'])} | "
        f"{_verdict(targets['batch_ratio'])} |",
        f"| one-event requests: service req/s ÷ bare FastAPI req/s | "
        f"**{_pct(ratios['single_vs_bare_fastapi'])}** | "
        f"{'≥ ' + _pct(single_target['target']) if single_target else '-'} | "
        f"{_verdict(single_target)} |",
        f"| peak RSS of the server process | **{memory['peak_rss_mb']:.0f} MB** | "
        f"< {targets['peak_rss_mb']['target']} MB | {_verdict(targets['peak_rss_mb'])} |",
        "",
        "| batch ingestion (100 purchases x 3 lines a request) | service | ceiling |",
        "| --- | ---: | ---: |",
        f"| events/s | {batch['events_per_s']:,.0f} | {roof['events_per_s']:,.0f} |",
        f"| rows/s | {batch['rows_per_s']:,.0f} | {roof['rows_per_s']:,.0f} |",
        f"| events measured / rows written | {batch['events']:,} / "
        f"{rows_written:,} | "
        f"{roof['events']:,} / {roof['rows']:,} |",
        f"| time | {batch['http']['duration_s']:.1f} s | {roof['seconds']:.2f} s |",
        f"| request latency p50 / p99 | {batch['http']['p50_ms']:.0f} / "
        f"{batch['http']['p99_ms']:.0f} ms | - |",
        f"| server process CPU per event | "
        f"{1e6 * batch['http']['extra']['server_cpu_s'] / batch['events']:.0f} µs | - |",
        "",
        "Rows per event: "
        + ", ".join(f"{name} {count:g}" for name, count in batch["rows_per_event"].items())
        + f". Ceiling: {roof['method']}.",
        "",
        "| one-event requests (1 purchase, 1-3 lines) | req/s | p50 | p99 | server CPU/request |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for label, figures in (
        ("service (`returnstack serve`)", service),
        ("bare FastAPI, async endpoint (the ceiling)", bare),
        ("bare FastAPI, sync endpoint (thread pool; information)", bare_sync),
    ):
        lines.append(
            f"| {label} | {figures['requests_per_s']:,.0f} | {figures['p50_ms']:.2f} ms | "
            f"{figures['p99_ms']:.2f} ms | {figures['extra']['server_cpu_us_per_request']:.0f} µs |"
        )

    def cores(figures: dict[str, Any]) -> str:
        busy = figures["extra"].get("cores_busy")
        if not busy:
            return "not recorded"
        return (
            f"{busy['all']:.2f} of {machine['cpus']} (server {busy['server']:.2f}, load generator "
            f"{busy['load_generator']:.2f}, rest {busy['rest']:.2f})"
        )

    lines += [
        "",
        f"Cores busy (CPU seconds per second) during the measured batch: {cores(batch['http'])}; "
        f"during the service's one-event requests: {cores(service)}; during bare FastAPI's: "
        f"{cores(bare)}. The rest is PostgreSQL's processes where it is the backend, and any "
        "other process on the machine.",
        "",
        f"Memory: peak RSS (VmHWM) {memory['peak_rss_mb']:.0f} MB over the server's life; "
        f"{memory['peak_rss_after_batch_mb']:.0f} MB at the end of the batch phase.",
        "",
    ]
    return "\n".join(lines)


def render(results: list[dict[str, Any]]) -> str:
    return "\n".join(render_one(result) for result in results)


def update_readme(readme: Path, result_files: list[Path]) -> None:
    results = [json.loads(path.read_text()) for path in result_files if path.exists()]
    block = f"{BEGIN}\n\n{render(results)}\n{END}"
    text = readme.read_text() if readme.exists() else ""
    if BEGIN in text and END in text:
        head, _, rest = text.partition(BEGIN)
        _, _, tail = rest.partition(END)
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n## Figures\n\n" + block + "\n"
    readme.write_text(text)
