"""Closed-loop load generators: each client sends its own file of bodies, one request at a time,
on one keep-alive connection, until its file is used up.

`wrk` (C, epoll, one OS thread per connection) is the default when installed: it spends a few
microseconds of CPU per request, so on a 2-core machine shared with the server it takes
little from what it measures. `python` (one process per client, each with an httpx.Client)
is the fallback; it costs far more CPU per request (see README).
"""

import json
import multiprocessing
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

WRK_SCRIPT = """
-- One connection per thread; each thread sends the bodies of its own file once, then stops
-- and appends a line to $BENCH_DONE. wrk's main thread sleeps for the whole -d duration
-- whatever the threads do, so the harness sends it SIGINT once every thread is done, and
-- the elapsed time is taken here (CLOCK_MONOTONIC, through LuaJIT's ffi), not from wrk.
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local clock = ffi.new("bench_timespec")
local function now_us()
  ffi.C.clock_gettime(1, clock)
  return tonumber(clock.tv_sec) * 1000000 + tonumber(clock.tv_nsec) / 1000
end

local threads = {}
local count = 0

function setup(thread)
  count = count + 1
  thread:set("file", os.getenv("BENCH_BODIES") .. "/bodies-" .. count .. ".txt")
  -- wrk calls request() once on the first thread before it runs, to check the request it
  -- builds (script_verify_request); that call must not use up a body.
  thread:set("verify_call", count == 1)
  table.insert(threads, thread)
end

function init(args)
  bodies = {}
  for line in io.lines(file) do bodies[#bodies + 1] = line end
  sent = 0
  responses = 0
  bad = 0
  first_bad = ""
  first_sent_us = 0
  last_done_us = 0
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = os.getenv("BENCH_AUTH")
end

function request()
  if verify_call then
    verify_call = false
    return wrk.format(nil, nil, nil, bodies[1])
  end
  sent = sent + 1
  if sent == 1 then first_sent_us = now_us() end
  return wrk.format(nil, nil, nil, bodies[sent] or bodies[#bodies])
end

function response(status, headers, body)
  responses = responses + 1
  if status < 200 or status > 299 then
    bad = bad + 1
    if first_bad == "" then first_bad = status .. " " .. string.sub(body or "", 1, 300) end
  end
  if responses >= #bodies then
    last_done_us = now_us()
    wrk.thread:stop()
    local marker = io.open(os.getenv("BENCH_DONE"), "a")
    marker:write("done\\n")
    marker:close()
  end
end

function done(summary, latency, requests)
  local total, failed, sample = 0, 0, ""
  local began, ended = math.huge, 0
  for _, thread in ipairs(threads) do
    total = total + thread:get("responses")
    failed = failed + thread:get("bad")
    if sample == "" then sample = thread:get("first_bad") end
    began = math.min(began, thread:get("first_sent_us"))
    ended = math.max(ended, thread:get("last_done_us"))
  end
  local errors = summary.errors
  io.write("BENCH_JSON ")
  io.write(string.format(
    '{"requests": %d, "responses": %d, "non_200": %d, "elapsed_us": %d, ' ..
    '"socket_errors": %d, "timeouts": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, ' ..
    '"max_us": %d, "mean_us": %f, "first_bad": %q}\\n',
    summary.requests, total, failed, math.floor(ended - began),
    errors.connect + errors.read + errors.write, errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean, sample))
end
"""


@dataclass
class LoadResult:
    tool: str
    clients: int
    requests: int
    duration_s: float
    failures: int  # non-200 answers, socket errors and timeouts
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    first_failure: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["requests_per_s"] = round(self.requests_per_s, 1)
        return data


def available(tool: str) -> bool:
    return tool == "python" or shutil.which("wrk") is not None


def run(
    tool: str, url: str, files: list[Path], auth: str, *, timeout_s: float = 1800
) -> LoadResult:
    """Send every body of `files` (one client per file) to `url`; return the figures."""
    if tool == "wrk":
        return _run_wrk(url, files, auth, timeout_s)
    return _run_python(url, files, auth, timeout_s)


def _run_wrk(url: str, files: list[Path], auth: str, timeout_s: float) -> LoadResult:
    directory = files[0].parent
    expected = [directory / f"bodies-{index}.txt" for index in range(1, len(files) + 1)]
    if sorted(files) != sorted(expected):
        raise ValueError("wrk needs the body files named bodies-1.txt ... bodies-N.txt")
    bodies = sum(count_lines(path) for path in files)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT)
    marker = Path(script.name).with_suffix(".done")
    clients = len(files)
    env = {
        **os.environ,
        "BENCH_BODIES": str(directory),
        "BENCH_AUTH": auth,
        "BENCH_DONE": str(marker),
    }
    command = [
        "wrk", "-t", str(clients), "-c", str(clients), "-d", f"{int(timeout_s)}s",
        "--timeout", "120s", "-s", script.name, url,
    ]  # fmt: skip
    try:
        with subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        ) as wrk:
            deadline = time.monotonic() + timeout_s + 30
            while wrk.poll() is None and time.monotonic() < deadline:
                if marker.exists() and len(marker.read_text().splitlines()) >= clients:
                    break
                time.sleep(0.05)
            if wrk.poll() is None:
                wrk.send_signal(signal.SIGINT)  # wrk then prints its summary and exits
            stdout, stderr = wrk.communicate(timeout=60)
    finally:
        os.unlink(script.name)
        marker.unlink(missing_ok=True)
    done = subprocess.CompletedProcess(command, wrk.returncode, stdout, stderr)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    figures = json.loads(line.removeprefix("BENCH_JSON "))
    failures = figures["non_200"] + figures["socket_errors"] + figures["timeouts"]
    if figures["responses"] != bodies:
        failures += abs(bodies - figures["responses"])
    return LoadResult(
        tool="wrk",
        clients=clients,
        requests=figures["responses"],
        duration_s=figures["elapsed_us"] / 1e6,
        failures=failures,
        p50_ms=figures["p50_us"] / 1000,
        p90_ms=figures["p90_us"] / 1000,
        p99_ms=figures["p99_us"] / 1000,
        max_ms=figures["max_us"] / 1000,
        first_failure=figures["first_bad"],
        extra={"requests_sent": figures["requests"]},
    )


def count_lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(1 for _ in handle)


# --- the Python fallback ------------------------------------------------------------------


def _client(url: str, path: str, auth: str, start: Any, results: Any) -> None:
    import httpx

    bodies = Path(path).read_bytes().splitlines()
    headers = {"Content-Type": "application/json", "Authorization": auth}
    latencies = []
    failures = 0
    first_failure = ""
    with httpx.Client(timeout=120, headers=headers) as client:
        client.get(url.rsplit("/v1/", 1)[0] + "/healthz")  # open the connection first
        start.wait()
        began = time.perf_counter()
        for body in bodies:
            sent = time.perf_counter()
            try:
                answer = client.post(url, content=body)
                status, text = answer.status_code, answer.text
            except httpx.HTTPError as exc:
                status, text = 0, repr(exc)
            latencies.append(time.perf_counter() - sent)
            if not 200 <= status < 300:  # the adapters answer 204 (Constructor)
                failures += 1
                first_failure = first_failure or f"{status} {text[:300]}"
        ended = time.perf_counter()
    results.put((began, ended, latencies, failures, first_failure))


def _run_python(url: str, files: list[Path], auth: str, timeout_s: float) -> LoadResult:
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    results = context.Queue()
    processes = [
        context.Process(target=_client, args=(url, str(path), auth, start, results))
        for path in files
    ]
    for process in processes:
        process.start()
    time.sleep(1.0 + 0.2 * len(processes))  # let every client import httpx and connect
    start.set()
    outcomes = [results.get(timeout=timeout_s) for _ in processes]
    for process in processes:
        process.join(timeout=30)
    began = min(outcome[0] for outcome in outcomes)
    ended = max(outcome[1] for outcome in outcomes)
    latencies = sorted(latency for outcome in outcomes for latency in outcome[2])
    failures = sum(outcome[3] for outcome in outcomes)
    first = next((outcome[4] for outcome in outcomes if outcome[4]), "")
    cuts = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else []

    def pick(p: int) -> float:
        return 1000 * (cuts[p - 1] if cuts else (latencies[0] if latencies else 0.0))

    return LoadResult(
        tool="python",
        clients=len(files),
        requests=len(latencies),
        duration_s=ended - began,
        failures=failures,
        p50_ms=pick(50),
        p90_ms=pick(90),
        p99_ms=pick(99),
        max_ms=1000 * (latencies[-1] if latencies else 0.0),
        first_failure=first,
    )
