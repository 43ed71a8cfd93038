"""Prometheus metrics. One process: its own. Under `serve --workers N`, every worker writes
its values to files in PROMETHEUS_MULTIPROC_DIR (set by `serve` before the workers start)
and /metrics answers their sums (kit/health.py); separate replicas are scraped each."""

from prometheus_client import CollectorRegistry, Counter, Histogram

REGISTRY = CollectorRegistry()

REQUESTS = Counter(
    "returnstack_http_requests_total",
    "HTTP requests by route, method and status.",
    ["route", "method", "status"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "returnstack_http_request_duration_seconds",
    "HTTP request latency by route.",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
EVENTS_INGESTED = Counter(
    "returnstack_events_ingested_total", "Events recorded (duplicates excluded).", registry=REGISTRY
)
WEBHOOK_DELIVERIES = Counter(
    "returnstack_webhook_deliveries_total",
    "Webhook delivery attempts by outcome: succeeded, retrying (failed, another attempt "
    "is scheduled), failed (no attempt follows).",
    ["outcome"],
    registry=REGISTRY,
)
WEBHOOK_ATTEMPT_SECONDS = Histogram(
    "returnstack_webhook_attempt_duration_seconds",
    "Duration of webhook delivery attempts (connect, send, answer).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
GROUP_COMMIT_REQUESTS = Histogram(
    "returnstack_group_commit_requests",
    "Requests written per group commit (kit/groupcommit.py).",
    buckets=(1, 2, 4, 8, 16, 32, 48),
    registry=REGISTRY,
)
OVERLOADED = Counter(
    "returnstack_overloaded_total",
    "Requests refused with 503 overloaded, by kind: writer (the event writer's queue full or "
    "its wait too long), admission (a request waited too long for a thread).",
    ["kind"],
    registry=REGISTRY,
)
