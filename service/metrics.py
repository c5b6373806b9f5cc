"""Every Prometheus metric of the broker, in one place. Labels never carry ids, tokens or raw paths."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter(
    "broker_http_requests_total",
    "HTTP requests served, by method, route template and status.",
    ["method", "route", "status"],
)
HTTP_REQUEST_DURATION = Histogram(
    "broker_http_request_duration_seconds",
    "Time to serve an HTTP request, by method and route template.",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
DEPENDENCY_UP = Histogram(
    "broker_dependency_ping_seconds",
    "Time a readiness ping of a dependency took, by dependency and outcome.",
    ["dependency", "outcome"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 2, 5),
)

REFRESH_ATTEMPTS = Counter(
    "broker_refresh_attempts_total",
    "Token refreshes, by provider and outcome (refreshed, transient_failure, terminal_failure, ...).",
    ["provider", "outcome"],
)
REFRESH_DURATION = Histogram(
    "broker_refresh_duration_seconds",
    "Time a refresh took, lock to write, by provider.",
    ["provider"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
SCHEDULING_LAG = Histogram(
    "broker_refresh_scheduling_lag_seconds",
    "Claim time minus due time of scheduled refreshes.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
)
SCHEDULE_SIZE = Gauge("broker_refresh_schedule_size", "Accounts in the refresh schedule (due or leased).")
SCHEDULE_LEASED = Gauge("broker_refresh_schedule_leased", "Schedule entries currently claimed by a worker.")
SCHEDULE_OVERDUE = Gauge("broker_refresh_schedule_overdue", "Entries due but not yet claimed.")
TOKEN_ENDPOINT_RESPONSES = Counter(
    "broker_token_endpoint_responses_total",
    "Token endpoint answers, by provider and status class (2xx, 4xx, 5xx, timeout, error).",
    ["provider", "status_class"],
)
OUTBOX_BACKLOG = Gauge("broker_outbox_backlog", "Accounts with events waiting in their outbox.")
EVENTS_PUBLISHED = Counter("broker_events_published_total", "Events published to Kafka, by type.", ["type"])
EVENTS_FAILED = Counter("broker_events_failed_total", "Event publications that failed (and will be retried).")
RECONCILED = Counter("broker_refresh_reconciled_total", "Accounts the reconciler put back on the schedule.")
AUDIT_BUFFERED = Gauge("broker_audit_buffered", "Audit entries recorded but not yet written to MongoDB.")
AUDIT_FLUSH_FAILURES = Counter(
    "broker_audit_flush_failures_total", "Audit flushes that failed (their entries stay buffered)."
)
REFRESH_CONCURRENCY = Gauge(
    "broker_refresh_concurrency_limit",
    "Refreshes this worker runs at once now (lowered when the database is slow).",
)
