"""The webhooks benchmark (`python -m bench webhooks`): deliveries per second of one worker,
the delay from commit to delivery at a steady rate, and what the dispatcher costs ingestion.

Per backend, on a fresh database, with one subscription (`*`) to a local receiver: its own
process (bench/receiver.py, asyncio, HTTP/1.1 keep-alive, answers 200 at once):

1. Throughput of one worker: `returnstack worker` runs (idle); N messages are committed to
   the outbox in one transaction; the clock runs from that commit to the arrival of the last
   one at the receiver (the worker publishes, claims, signs, sends and records them).
2. Delay: `returnstack serve` (its dispatcher inside, as it runs by default: a niced child
   process of the server) takes one-event purchases (`POST /v1/events`) on an open-loop
   schedule at R requests a second; each
   message's delay is its arrival at the receiver minus its `timestamp` (when it was
   recorded, just before its transaction committed: so the delay is, if anything, a little
   longer than from commit). p50, p99, max.
3. Ingestion with the dispatcher running vs not: the ingest benchmark's batch path (100
   purchases of 3 lines a request, closed loop) on `returnstack serve` with
   `RETURNSTACK_WEBHOOKS_DISPATCHER=false` (off) and with its dispatcher delivering every
   message to the receiver (on), alternating off, on, off, on, off (`--phases`), each phase
   on a fresh server process after a warm-up. After an "on" phase the harness waits until
   every message arrived; after an "off" phase its messages are published with the
   subscription disabled, so that no phase inherits the backlog of another. The file grows
   from phase to phase (an "on" phase more: its deliveries), and ingestion slows with it;
   so each "on" phase is compared with the mean of the "off" phases beside it, and the drop
   is the mean over the "on" phases of 1 - on / mean(its neighbours).
"""

import contextlib
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from bench import harness, loadgen, openloop, workload
from bench.harness import console
from bench.server import (
    ServerProcess,
    Target,
    cpu_seconds,
    fresh_database,
    process_tree,
    returnstack_command,
    returnstack_server,
    service_env,
)

THROUGHPUT_TARGET = 1000.0  # deliveries/s of one worker
DELAY_P99_TARGET_MS = 1000.0  # at 200 events/s
INGEST_DROP_TARGET = 0.10
PARTS = ("throughput", "delay", "ingestion")
PHASES = ("off", "on", "off", "on", "off")
WAIT_S = 600.0  # for deliveries to arrive before the run fails
DELAY_WARMUP_SECONDS = 3.0  # at the rate, before the delay is measured


@dataclass
class Options(harness.Options):
    deliveries: int
    rate: float
    seconds: float
    events: int
    clients: int
    tool: str
    parts: tuple[str, ...] = PARTS
    phases: tuple[str, ...] = PHASES


# --- the receiver and the worker ------------------------------------------------------------


class ReceiverProcess:
    def __init__(self, workdir: Path) -> None:
        port_file = workdir / "receiver.port"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(harness.BENCH.parent), env.get("PYTHONPATH")])
        )
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.receiver", "--port-file", str(port_file)], env=env
        )
        deadline = time.monotonic() + 30
        while not port_file.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the receiver did not start")
            time.sleep(0.05)
        self.base = f"http://127.0.0.1:{port_file.read_text()}"
        self.url = f"{self.base}/hook"
        self.client = httpx.Client(timeout=60)

    def count(self) -> int:
        return int(self.client.get(f"{self.base}/count").json())

    def arrivals(self) -> dict[str, tuple[float, str]]:
        return {k: (v[0], v[1]) for k, v in self.client.get(f"{self.base}/arrivals").json().items()}

    def wait_for(self, count: int, timeout: float = WAIT_S) -> float:
        """Wait until `count` messages arrived; the time.time() it was seen."""
        deadline = time.monotonic() + timeout
        while (arrived := self.count()) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{arrived} of {count} messages arrived in {timeout}s")
            time.sleep(0.02)
        return time.time()

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.process.pid)

    def stop(self) -> None:
        self.client.close()
        self.process.kill()
        self.process.wait(10)


def dispatcher_env(target: Target, *, dispatcher: bool = True) -> dict[str, str]:
    env = service_env(target)
    env["RETURNSTACK_WEBHOOKS_ALLOW_PRIVATE"] = "true"
    env["RETURNSTACK_WEBHOOKS_DISPATCHER"] = "true" if dispatcher else "false"
    return env


@contextlib.contextmanager
def worker_process(target: Target) -> Iterator[subprocess.Popen[bytes]]:
    """`returnstack worker`, running once it says so."""
    log_path = target.workdir / "worker.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [returnstack_command(), "worker"],
            env=dispatcher_env(target),
            cwd=target.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while b"dispatcher running" not in log_path.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not start:\n{log_path.read_text()}")
            time.sleep(0.05)
        time.sleep(0.5)  # its loop has started (it logs first)
        yield process
    finally:
        process.send_signal(2)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def server(target: Target, *, dispatcher: bool) -> ServerProcess:
    process = returnstack_server(target)
    process.env = dispatcher_env(target, dispatcher=dispatcher)
    return process


def dispatcher_started(running: ServerProcess, timeout: float = 60.0) -> None:
    """Wait until the server's dispatcher process has started its loop: its start-up
    (importing the app's modules, about a second of CPU) is not what is measured."""
    deadline = time.monotonic() + timeout
    while b"webhook.dispatcher_started" not in running.log_path.read_bytes():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the dispatcher did not start:\n{running.log()}")
        time.sleep(0.05)


# --- the service, in process -------------------------------------------------------------------


class Service:
    """The bench's own handle on the database, through the service's code."""

    def __init__(self, target: Target) -> None:
        from returnstack.config import Settings
        from returnstack.kit.db import Database

        self.settings = Settings(
            database_url=target.url, webhooks_allow_private=True, _env_file=None
        )
        self.db = Database(self.settings)

    def subscribe(self, tenant_id: str, url: str) -> str:
        from returnstack.webhooks import service

        with self.db.transaction() as session:
            created = service.create_subscription(
                session,
                tenant_id=tenant_id,
                url=url,
                events=["*"],
                description="bench",
                enabled=True,
                allow_private=True,
            )
        return str(created["id"])

    def set_enabled(self, tenant_id: str, subscription_id: str, enabled: bool) -> None:
        from returnstack.webhooks import service

        with self.db.transaction() as session:
            service.update_subscription(
                session,
                tenant_id=tenant_id,
                subscription_id=subscription_id,
                changes={"enabled": enabled},
                allow_private=True,
            )

    def record(self, tenant_id: str, count: int) -> float:
        """`count` messages (return updates of 500 returns) in one transaction; its seconds."""
        from returnstack.outbox.service import DomainEvent, record

        events = [
            DomainEvent(
                type="return.updated",
                data={"id": f"ret_{i % 500}", "status": "approved", "items": [{"quantity": 1}]},
            )
            for i in range(count)
        ]
        started = time.perf_counter()
        with self.db.transaction() as session:
            record(session, tenant_id=tenant_id, events=events)
        return time.perf_counter() - started

    def publish_all(self) -> None:
        from returnstack.webhooks import service

        while True:
            with self.db.transaction() as session:
                if service.publish(session, now=service.utcnow()) < service.PUBLISH_BATCH:
                    return

    def messages(self) -> int:
        from sqlalchemy import func, select

        from returnstack.models import OutboxEvent

        with self.db.transaction(write=False) as session:
            return int(session.scalar(select(func.count()).select_from(OutboxEvent)) or 0)

    def close(self) -> None:
        self.db.dispose()


# --- the phases -----------------------------------------------------------------------------


def throughput(
    opts: Options, target: Target, service: Service, receiver: ReceiverProcess, tenant_id: str
) -> dict[str, Any]:
    before = receiver.count()
    with worker_process(target) as worker:
        cpu_before = cpu_seconds(worker.pid)
        receiver_before = receiver.cpu_seconds()
        machine_before = harness.machine_cpu()
        commit_s = service.record(tenant_id, opts.deliveries)
        committed = time.time()
        started = time.monotonic()
        ended = receiver.wait_for(before + opts.deliveries)
        elapsed = ended - committed
        wall = time.monotonic() - started
        worker_cpu = cpu_seconds(worker.pid) - cpu_before
        receiver_cpu = receiver.cpu_seconds() - receiver_before
        machine = harness.machine_cpu() - machine_before
    rate = opts.deliveries / elapsed
    console.print(
        f"  one worker: {opts.deliveries:,} deliveries in {elapsed:.2f}s = {rate:,.0f}/s "
        f"(worker CPU {1e6 * worker_cpu / opts.deliveries:.0f} µs a delivery)"
    )
    return {
        "deliveries": opts.deliveries,
        "commit_s": round(commit_s, 3),
        "seconds": round(elapsed, 3),
        "deliveries_per_s": round(rate, 1),
        "worker_cpu_us_per_delivery": round(1e6 * worker_cpu / opts.deliveries, 1),
        "receiver_cpu_us_per_delivery": round(1e6 * receiver_cpu / opts.deliveries, 1),
        "cores_busy": {
            "all": round(machine / wall, 2),
            "worker": round(worker_cpu / wall, 2),
            "receiver": round(receiver_cpu / wall, 2),
        },
    }


def _seconds(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def delay(
    opts: Options, target: Target, service: Service, receiver: ReceiverProcess, auth: str
) -> dict[str, Any]:
    count = int(opts.rate * opts.seconds)
    warmup = int(opts.rate * DELAY_WARMUP_SECONDS)

    def pipelines(phase: str, events: int) -> list[openloop.Pipeline]:
        return [
            openloop.Pipeline((openloop.Step("event", "POST", "/v1/events", body),))
            for body in workload.bodies(phase, events=events, per_request=1, lines=None)
        ]

    warmup_pipelines, measured_pipelines = (
        pipelines("delay-warmup", warmup),
        pipelines("delay", count),
    )
    headers = {"authorization": auth, "content-type": "application/json"}
    with server(target, dispatcher=True) as running:
        dispatcher_started(running)
        # The first seconds of a new server (its first requests, its start-up ANALYZE)
        # count as busy, and the dispatcher yields then: a cold start, not the steady
        # rate measured. Their messages are delivered, and not counted.
        arrived_before, messages_before = len(receiver.arrivals()), service.messages()
        openloop.run(
            "127.0.0.1",
            running.port,
            headers,
            warmup_pipelines,
            per_second=opts.rate,
            step_gap=0.0,
        )
        receiver.wait_for(arrived_before + service.messages() - messages_before)
        seen = set(receiver.arrivals())
        messages_before = service.messages()
        run = openloop.run(
            "127.0.0.1",
            running.port,
            headers,
            measured_pipelines,
            per_second=opts.rate,
            step_gap=0.0,
        )
        # A request that timed out may still have committed: the messages are counted.
        failed = [s for s in run.samples if not 200 <= s.status < 300]
        if failed:
            console.print(f"  [yellow]{len(failed)} requests failed[/yellow]: {failed[0]}")
        made = service.messages() - messages_before
        receiver.wait_for(len(seen) + made)
    delays = sorted(
        arrived - _seconds(stamp)
        for message_id, (arrived, stamp) in receiver.arrivals().items()
        if message_id not in seen
    )
    figures = {
        "requests": count,
        "warmup_requests": warmup,
        "failed_requests": len(failed),
        "messages": made,
        "rate_per_s": opts.rate,
        "late_sends": sum(1 for s in run.samples if s.sent - s.due > 0.05),
        "delay_p50_ms": round(1000 * openloop.percentile(delays, 0.50), 1),
        "delay_p99_ms": round(1000 * openloop.percentile(delays, 0.99), 1),
        "delay_max_ms": round(1000 * delays[-1], 1),
        "request_p99_ms": round(
            1000 * openloop.percentile(sorted(s.done - s.due for s in run.samples), 0.99), 1
        ),
    }
    console.print(
        f"  delay at {opts.rate:.0f} events/s: p50 {figures['delay_p50_ms']} ms, "
        f"p99 {figures['delay_p99_ms']} ms, max {figures['delay_max_ms']} ms ({made} messages)"
    )
    return figures


def ingestion(
    opts: Options,
    target: Target,
    service: Service,
    receiver: ReceiverProcess,
    tenant_id: str,
    subscription_id: str,
    auth: str,
) -> dict[str, Any]:
    warmup = max(1_000, opts.events // 10)
    phases = list(opts.phases)
    rates: dict[str, list[float]] = {"off": [], "on": []}
    phase_figures = []
    phase_rates: list[float] = []
    for index, mode in enumerate(phases):
        files = {
            kind: workload.write_body_files(
                target.workdir / "bodies" / f"{kind}{index}",
                workload.bodies(f"ingest-{kind}{index}", events=count, per_request=100),
                opts.clients,
            )
            for kind, count in (("w", warmup), ("m", opts.events))
        }
        messages_before = service.messages()
        arrived_before = receiver.count()
        with server(target, dispatcher=mode == "on") as running:
            url = f"{running.base_url}/v1/events"
            if mode == "on":
                dispatcher_started(running)
            loadgen.run(opts.tool, url, files["w"], auth)
            cpu_before = running.cpu_seconds()
            split_before = _server_split(running.pid)
            reads_before = _read_calls(running.pid)
            receiver_before = receiver.cpu_seconds()
            machine_before = harness.machine_cpu()
            result = loadgen.run(opts.tool, url, files["m"], auth)
            server_cpu = running.cpu_seconds() - cpu_before
            split = [a - b for a, b in zip(_server_split(running.pid), split_before, strict=True)]
            reads = _read_calls(running.pid) - reads_before
            receiver_cpu = receiver.cpu_seconds() - receiver_before
            machine_cpu = harness.machine_cpu() - machine_before
            if result.failures:
                raise RuntimeError(f"{mode}: {result.failures} failed: {result.first_failure}")
            delivered_during = receiver.count() - arrived_before
            made = service.messages() - messages_before
            drain_s = 0.0
            if mode == "on":
                waited = time.monotonic()
                receiver.wait_for(arrived_before + made)
                drain_s = time.monotonic() - waited
        if mode == "off":  # its messages, published with no subscription to deliver them
            service.set_enabled(tenant_id, subscription_id, False)
            service.publish_all()
            service.set_enabled(tenant_id, subscription_id, True)
        rate = opts.events / result.duration_s
        rates[mode].append(round(rate, 1))
        phase_rates.append(rate)
        phase_figures.append(
            {
                "dispatcher": mode,
                "events_per_s": round(rate, 1),
                "server_cpu_us_per_event": round(1e6 * server_cpu / opts.events, 1),
                # Of which the server's own process(es), and its dispatcher child.
                "server_own_cpu_us_per_event": round(1e6 * split[0] / opts.events, 1),
                "dispatcher_cpu_us_per_event": round(1e6 * split[1] / opts.events, 1),
                # read() system calls of the server's own process(es): pages SQLite read
                # from the file or the WAL rather than from its cache.
                "server_reads_per_event": round(reads / opts.events, 2),
                "receiver_cpu_us_per_event": round(1e6 * receiver_cpu / opts.events, 1),
                # Every process of the machine (the database's, the load generator's, ...).
                "machine_cpu_us_per_event": round(1e6 * machine_cpu / opts.events, 1),
                "messages": made,
                "delivered_during_phase": delivered_during,
                "drain_after_s": round(drain_s, 2),
            }
        )
        figures = phase_figures[-1]
        console.print(
            f"  ingestion, dispatcher {mode}: {rate:,.0f} events/s "
            f"({delivered_during:,} of {made:,} messages delivered during the phase"
            + (f", the rest {drain_s:.1f}s after)" if mode == "on" else ")")
            + f"; CPU µs an event: server {figures['server_own_cpu_us_per_event']:.0f}, "
            f"dispatcher {figures['dispatcher_cpu_us_per_event']:.0f}, "
            f"receiver {figures['receiver_cpu_us_per_event']:.0f}, "
            f"machine {figures['machine_cpu_us_per_event']:.0f}; server reads an event "
            f"{figures['server_reads_per_event']:.1f}"
        )
    drops = phase_drops(phases, phase_rates)
    console.print("  drop of each 'on' phase: " + ", ".join(f"{value:.1%}" for value in drops))
    drop = statistics.mean(drops)
    return {
        "events_per_phase": opts.events,
        "phases": phase_figures,
        "rates": rates,
        "drops": [round(value, 3) for value in drops],
        "drop": drop,
    }


def phase_drops(modes: Sequence[str], rates: Sequence[float]) -> list[float]:
    """The drop of each "on" phase: 1 - its rate / the mean rate of the "off" phases just
    before and after it (the one there is, at an end)."""
    drops = []
    for index, mode in enumerate(modes):
        if mode != "on":
            continue
        neighbours = [
            rates[i] for i in (index - 1, index + 1) if 0 <= i < len(modes) and modes[i] == "off"
        ]
        if not neighbours:
            raise ValueError(f"phase {index + 1} (on) has no 'off' phase beside it")
        drops.append(1 - rates[index] / statistics.mean(neighbours))
    return drops


def _read_calls(pid: int) -> int:
    """read() system calls of a server's own processes (not its dispatcher child)."""
    total = 0
    for member in process_tree(pid):
        with contextlib.suppress(OSError, ValueError):
            with open(f"/proc/{member}/cmdline", "rb") as cmdline:
                if b"returnstack.webhooks.process" in cmdline.read():
                    continue
            with open(f"/proc/{member}/io") as io:
                for line in io:
                    if line.startswith("syscr:"):
                        total += int(line.split()[1])
    return total


def _server_split(pid: int) -> tuple[float, float]:
    """CPU seconds of a server's processes: its own (and its workers'), its dispatcher's."""
    own = dispatcher = 0.0
    for member in process_tree(pid):
        with contextlib.suppress(OSError):
            seconds = cpu_seconds(member)
            with open(f"/proc/{member}/cmdline", "rb") as cmdline:
                if b"returnstack.webhooks.process" in cmdline.read():
                    dispatcher += seconds
                else:
                    own += seconds
    return own, dispatcher


def run_backend(backend: str, opts: Options) -> dict[str, Any]:
    started = harness.started_at()
    source = harness.source_state()
    busy = harness.wait_idle(opts.wait_idle) if opts.wait_idle else harness.cpu_busy()
    with fresh_database(backend, opts.postgres_url) as target:
        tenant_id, auth = harness.bench_tenant(target, "EUR")
        receiver = ReceiverProcess(target.workdir)
        service = Service(target)
        try:
            subscription_id = service.subscribe(tenant_id, receiver.url)
            one_worker = (
                throughput(opts, target, service, receiver, tenant_id)
                if "throughput" in opts.parts
                else None
            )
            delays = delay(opts, target, service, receiver, auth) if "delay" in opts.parts else None
            ingest = (
                ingestion(opts, target, service, receiver, tenant_id, subscription_id, auth)
                if "ingestion" in opts.parts
                else None
            )
        finally:
            service.close()
            receiver.stop()
        machine = harness.machine(target)
    targets = {}
    if one_worker is not None:
        targets["deliveries_per_s"] = {
            "target": THROUGHPUT_TARGET,
            "value": one_worker["deliveries_per_s"],
            "met": one_worker["deliveries_per_s"] >= THROUGHPUT_TARGET,
        }
    if delays is not None:
        targets["delay_p99_ms"] = {
            "target": DELAY_P99_TARGET_MS,
            "value": delays["delay_p99_ms"],
            "met": delays["delay_p99_ms"] < DELAY_P99_TARGET_MS,
        }
    if ingest is not None:
        drop = ingest.pop("drop")
        targets["ingestion_drop"] = {
            "target": INGEST_DROP_TARGET,
            "value": round(drop, 3),
            "met": drop <= INGEST_DROP_TARGET,
        }
    return {
        "benchmark": "webhooks",
        "backend": backend,
        "started_at": started,
        "command": opts.command,
        "source": source,
        "machine": machine,
        "cpu_busy_before_start": round(busy, 3),
        "load_generator": {"tool": opts.tool, "clients": opts.clients},
        "throughput": one_worker,
        "delay": delays,
        "ingestion": ingest,
        "targets": targets,
    }


# --- the README -------------------------------------------------------------------------------


def render_one(result: dict[str, Any]) -> str:
    machine, targets = result["machine"], result["targets"]
    one, delays, ingest = result["throughput"], result["delay"], result["ingestion"]
    cores = one["cores_busy"]
    off, on = ingest["rates"]["off"], ingest["rates"]["on"]

    drops = ingest.get("drops")
    each_drop = (
        f" (mean of each 'on' phase's: {', '.join(f'{d:.1%}' for d in drops)})" if drops else ""
    )

    def listed(values: list[float]) -> str:
        return ", ".join(f"{value:,.0f}" for value in values)

    lines = [
        f"#### {harness.NAMES[result['backend']]}",
        "",
        f"Run of {result['started_at']}: `{result['command']}` ({machine['cpus']} cores, "
        f"{machine['cpu_model'] or 'unknown CPU'}, shared by the worker or server, the "
        f"receiver, the database and the load generator; {harness.engine(machine)}; Python "
        f"{machine['python']}; source at the start {result['source']['commit']}"
        f"{harness.dirty(result['source'])}; other processes kept "
        f"{result['cpu_busy_before_start']:.0%} of the cores busy just before the run).",
        "",
        "| measure | value | target |",
        "|---|---:|---|",
        f"| deliveries/s of one worker ({one['deliveries']:,} messages) | "
        f"{one['deliveries_per_s']:,.0f} | ≥ {THROUGHPUT_TARGET:,.0f}: "
        f"{harness.verdict(targets['deliveries_per_s'])} |",
        f"| worker CPU per delivery | {one['worker_cpu_us_per_delivery']:,.0f} µs | |",
        f"| receiver CPU per delivery | {one['receiver_cpu_us_per_delivery']:,.0f} µs | |",
        f"| commit → delivery at {delays['rate_per_s']:.0f} events/s, p50 / p99 / max "
        f"({delays['messages']:,} messages; {delays['failed_requests']:,} of "
        f"{delays['requests']:,} requests failed) | {delays['delay_p50_ms']:,.0f} / "
        f"{delays['delay_p99_ms']:,.0f} / {delays['delay_max_ms']:,.0f} ms | p99 < "
        f"{DELAY_P99_TARGET_MS:,.0f} ms: {harness.verdict(targets['delay_p99_ms'])} |",
        f"| ingestion events/s, dispatcher off (in order) | {listed(off)} | |",
        f"| ingestion events/s, dispatcher on and delivering | {listed(on)} | |",
        f"| ingestion drop with the dispatcher on{each_drop} | "
        f"{targets['ingestion_drop']['value']:.1%} | ≤ {INGEST_DROP_TARGET:.0%}: "
        f"{harness.verdict(targets['ingestion_drop'])} |",
        "",
        f"During the worker's drain the cores were busy {cores['all']:.2f} of "
        f"{machine['cpus']} (worker {cores['worker']:.2f}, receiver {cores['receiver']:.2f}). "
        "Ingestion phases ("
        + "; ".join(
            f"{p['dispatcher']}: {p['events_per_s']:,.0f} events/s, server CPU "
            f"{p['server_cpu_us_per_event']:,.0f} µs an event, {p['delivered_during_phase']:,} "
            f"of {p['messages']:,} messages delivered during it"
            for p in ingest["phases"]
        )
        + f"), {ingest['events_per_phase']:,} events each, {result['load_generator']['clients']} "
        f"clients ({result['load_generator']['tool']}).",
        "",
    ]
    return "\n".join(lines)


BENCH = harness.Benchmark("webhooks", "webhooks", "Webhooks", render_one)


def cli(argv: list[str]) -> int:
    parser = harness.parser(
        BENCH,
        __doc__.splitlines()[0],
        quick="fewer messages and events; results not recorded",
        profile="not supported by this benchmark",
    )
    parser.add_argument("--deliveries", type=int, help="messages the worker drains (default 20000)")
    parser.add_argument("--rate", type=float, default=200.0, help="events/s of the delay phase")
    parser.add_argument("--seconds", type=float, help="length of the delay phase (default 20)")
    parser.add_argument("--events", type=int, help="batch events per ingestion phase (20000)")
    parser.add_argument("--clients", type=int, default=4, help="ingestion clients (default 4)")
    parser.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument(
        "--parts",
        default=",".join(PARTS),
        help="which parts to run, comma-separated (default all; results of fewer not recorded)",
    )
    parser.add_argument(
        "--phases",
        default=",".join(PHASES),
        help="ingestion phases, comma-separated (default off,on,off,on,off)",
    )
    args = parser.parse_args(argv)
    phases = tuple(p.strip() for p in args.phases.split(",") if p.strip())
    if set(phases) - {"off", "on"}:
        parser.error("--phases takes 'off' and 'on'")
    try:
        phase_drops(phases, [1.0] * len(phases))
    except ValueError as exc:
        parser.error(f"--phases: {exc}")
    if "on" not in phases:
        parser.error("--phases needs an 'on' phase")
    parts = tuple(part.strip() for part in args.parts.split(",") if part.strip())
    if unknown := set(parts) - set(PARTS):
        parser.error(f"unknown parts: {', '.join(sorted(unknown))}")
    if set(parts) != set(PARTS) and not args.quick:
        parser.error("--parts needs --quick (a partial run is not recorded)")
    tool = args.loadgen
    if tool == "auto":
        tool = "wrk" if loadgen.available("wrk") else "python"
    opts = Options(
        **harness.common(BENCH, args, argv),
        deliveries=args.deliveries or (5_000 if args.quick else 20_000),
        rate=args.rate,
        seconds=args.seconds or (10.0 if args.quick else 20.0),
        events=args.events or (5_000 if args.quick else 20_000),
        clients=args.clients,
        tool=tool,
        parts=parts,
        phases=phases,
    )
    return harness.run(BENCH, opts, lambda backend: run_backend(backend, opts))
