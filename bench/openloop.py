"""An open-loop load generator: requests sent on a fixed schedule, whatever the server does.

bench/loadgen.py is closed loop (a client sends its next request when the previous answer
arrives), which measures throughput; a target of latency *at a given rate* needs the rate
held constant, so arrivals here do not wait for answers (wrk2 would do that for independent
requests, but it is not installed, and these requests depend on each other).

The work is a list of **pipelines**: one or a few steps each, where a step's path may name
the `id` of the first step's answer (`/v1/returns/{id}/approve`). Pipeline `i` starts at
`t0 + i * interval`; its step `k` is due at `start + k * step_gap`. A step is sent at its
due time, or as soon as the step before it has answered if that answer comes later.

Latency is measured **from the due time** to the end of the answer, so a late send (the
step before was slow, or the load generator itself was late) counts against the figures,
as it would for a user waiting: no coordinated omission. The time from the actual send is
kept too ("service time"), for information.

Pipelines are dealt round-robin to a few worker processes, each running an asyncio loop
with a small keep-alive connection pool and a minimal HTTP/1.1 client on asyncio streams
(a few tens of microseconds of CPU a request, where httpx costs a few hundred), because the
server, the database and this generator share the machine's cores.
"""

import asyncio
import multiprocessing
import time
from dataclasses import dataclass, field
from math import ceil
from typing import Any

import orjson


@dataclass(frozen=True)
class Step:
    action: str  # the name figures are reported under
    method: str
    path: str  # may contain "{id}": the "id" of the first step's JSON answer
    body: bytes
    expect_status: str | None = None  # the "status" the JSON answer must carry


@dataclass(frozen=True)
class Pipeline:
    steps: tuple[Step, ...]


@dataclass(frozen=True)
class Sample:
    pipeline: int
    step: int
    action: str
    due: float  # CLOCK_MONOTONIC, seconds (system-wide on Linux, so comparable across processes)
    sent: float
    done: float
    status: int  # HTTP status; 0 when no answer
    ok: bool
    error: str = ""


@dataclass
class Run:
    samples: list[Sample]
    t0: float
    interval: float
    step_gap: float
    workers: int
    worker_cpu_s: float  # CPU time of the worker processes while they sent
    extra: dict[str, Any] = field(default_factory=dict)


IDLE_LIMIT_S = 3.0  # uvicorn closes a keep-alive connection idle for 5 s


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = time.monotonic()


class _Client:
    """HTTP/1.1 with keep-alive: one request at a time per connection, a pool of idle ones."""

    def __init__(self, host: str, port: int, headers: dict[str, str], timeout_s: float) -> None:
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self.idle: list[_Connection] = []
        self.head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        self.head += f"Host: {host}:{port}\r\n"

    async def _connection(self) -> _Connection:
        # A connection the server may be closing is dropped rather than reused: a request
        # sent on it could fail for a reason of the client's making.
        while self.idle:
            conn = self.idle.pop()
            if time.monotonic() - conn.idle_since < IDLE_LIMIT_S and not conn.reader.at_eof():
                return conn
            conn.writer.close()
        reader, writer = await asyncio.open_connection(self.host, self.port)
        return _Connection(reader, writer)

    async def request(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        async with asyncio.timeout(self.timeout_s):  # cheaper than wait_for: no extra task
            return await self._request(method, path, body)

    async def _request(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        conn = await self._connection()
        try:
            head = f"{method} {path} HTTP/1.1\r\n{self.head}Content-Length: {len(body)}\r\n\r\n"
            conn.writer.write(head.encode() + body)
            raw = await conn.reader.readuntil(b"\r\n\r\n")
            lines = raw.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name:
                    headers[name.strip().lower()] = value.strip()
            if "content-length" in headers:
                payload = await conn.reader.readexactly(int(headers["content-length"]))
            elif headers.get("transfer-encoding", "").lower() == "chunked":
                payload = await _read_chunked(conn.reader)
            else:
                payload = await conn.reader.read()
                headers["connection"] = "close"
        except BaseException:
            conn.writer.close()
            raise
        if headers.get("connection", "").lower() == "close":
            conn.writer.close()
        else:
            conn.idle_since = time.monotonic()
            self.idle.append(conn)
        return status, payload

    def close(self) -> None:
        for conn in self.idle:
            conn.writer.close()
        self.idle.clear()


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


async def _sleep_until(moment: float) -> None:
    delay = moment - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


async def _pipeline(
    client: _Client, number: int, pipeline: Pipeline, start: float, step_gap: float
) -> list[Sample]:
    samples = []
    ident = ""
    # The first answer's "id" is read only when a later step's path names it.
    needs_id = any("{id}" in later.path for later in pipeline.steps[1:])
    for index, step in enumerate(pipeline.steps):
        due = start + index * step_gap
        await _sleep_until(due)
        sent = time.monotonic()
        status, payload, error = 0, b"", ""
        try:
            status, payload = await client.request(
                step.method, step.path.replace("{id}", ident), step.body
            )
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        done = time.monotonic()
        ok = 200 <= status < 300
        if ok and ((index == 0 and needs_id) or step.expect_status):
            try:
                answer = orjson.loads(payload)
                if index == 0 and needs_id:
                    ident = str(answer["id"])
                if step.expect_status and answer.get("status") != step.expect_status:
                    ok = False
                    error = f"status {answer.get('status')!r}, expected {step.expect_status!r}"
            except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
                ok, error = False, f"unreadable answer: {exc!r}"
        elif not ok and not error:
            error = f"{status} {payload[:300].decode(errors='replace')}"
        samples.append(Sample(number, index, step.action, due, sent, done, status, ok, error))
        if not ok:
            break  # the later steps cannot be sent; counted as not sent by the caller
    return samples


async def _drive(
    host: str,
    port: int,
    headers: dict[str, str],
    numbered: list[tuple[int, Pipeline]],
    t0: float,
    interval: float,
    step_gap: float,
    timeout_s: float,
) -> tuple[list[Sample], float]:
    """The samples of these pipelines, and the CPU time spent sending them."""
    client = _Client(host, port, headers, timeout_s)
    # Open a few connections before the clock starts.
    warm = [await client._connection() for _ in range(4)]
    client.idle.extend(warm)
    cpu_before = time.process_time()
    tasks = []
    for number, pipeline in numbered:
        start = t0 + number * interval
        await _sleep_until(start - 0.002)
        tasks.append(asyncio.create_task(_pipeline(client, number, pipeline, start, step_gap)))
    results = await asyncio.gather(*tasks)
    client.close()
    samples = [sample for samples in results for sample in samples]
    return samples, time.process_time() - cpu_before


def _worker(
    host: str,
    port: int,
    headers: dict[str, str],
    numbered: list[tuple[int, Pipeline]],
    t0: float,
    interval: float,
    step_gap: float,
    timeout_s: float,
    out: Any,
) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    out.put(asyncio.run(_drive(host, port, headers, numbered, t0, interval, step_gap, timeout_s)))


def run(
    host: str,
    port: int,
    headers: dict[str, str],
    pipelines: list[Pipeline],
    *,
    per_second: float,
    step_gap: float,
    workers: int = 2,
    t0: float | None = None,
    timeout_s: float = 30.0,
) -> Run:
    """Start `per_second` pipelines a second (so `per_second * steps` requests a second),
    the first at `t0` (time.monotonic(); default in 3 s: the workers import and connect
    meanwhile), dealt to `workers` processes; wait for every one to finish."""
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    interval = 1.0 / per_second
    t0 = time.monotonic() + 3.0 if t0 is None else t0
    lead_s = max(0.0, t0 - time.monotonic())
    numbered = list(enumerate(pipelines))
    processes = [
        context.Process(
            target=_worker,
            args=(
                host,
                port,
                headers,
                numbered[w::workers],
                t0,
                interval,
                step_gap,
                timeout_s,
                out,
            ),
            daemon=True,
        )
        for w in range(workers)
    ]
    for process in processes:
        process.start()
    span = len(pipelines) * interval + len(pipelines[0].steps) * step_gap if pipelines else 0
    outcomes = [out.get(timeout=lead_s + span + timeout_s * 6 + 60) for _ in processes]
    for process in processes:
        process.join(timeout=30)
    samples = sorted((sample for outcome in outcomes for sample in outcome[0]), key=lambda s: s.due)
    return Run(
        samples=samples,
        t0=t0,
        interval=interval,
        step_gap=step_gap,
        workers=workers,
        worker_cpu_s=sum(outcome[1] for outcome in outcomes),
    )


def percentile(ordered: list[float], share: float) -> float:
    """Nearest-rank percentile of an ascending list (0 for an empty one)."""
    if not ordered:
        return 0.0
    return ordered[max(0, ceil(share * len(ordered)) - 1)]
