"""Prometheus metrics. One registry per app, label values bounded (never a SID).

``account`` is a configured account's label (SINK_ACCOUNTS_FILE, or the Account SID of
SINK_TWILIO_ACCOUNT_SID), else "other": an arbitrary SID in a URL or an event adds no series.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_SIZE_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2000, 5000)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # serve --workers N sets it for its workers: each one's values go to files there
        self.multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
        # Registered in this order, which is the order /metrics lists them in.
        self._add_ingest_metrics(self.registry)
        self._add_database_metrics(self.registry)
        self._add_backfill_metrics(self.registry)

    def exposition(self) -> bytes:
        """What /metrics serves: this registry, or under serve --workers N the sum of every
        worker's metrics (prometheus-client's multiprocess mode, from the shared directory)."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        everyone = CollectorRegistry()
        MultiProcessCollector(everyone, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(everyone)

    def _add_ingest_metrics(self, r: CollectorRegistry) -> None:
        """Deliveries, events and group commits."""
        self.deliveries = Counter(
            "sink_deliveries",
            "Deliveries answered, by HTTP status and account",
            ["status", "account"],
            registry=r,
        )
        self.events = Counter(
            "sink_events",
            "Events by type, outcome (received, stored, duplicate, rejected) and account",
            ["type", "outcome", "account"],
            registry=r,
        )
        self.signature_failures = Counter(
            "sink_signature_failures",
            "Deliveries refused for their signature",
            ["reason"],
            registry=r,
        )
        self.batch_size = Histogram(
            "sink_batch_size", "Events per group commit", buckets=_SIZE_BUCKETS, registry=r
        )
        self.batch_deliveries = Histogram(
            "sink_batch_deliveries",
            "Deliveries per group commit",
            buckets=_SIZE_BUCKETS,
            registry=r,
        )
        self.commit_seconds = Histogram(
            "sink_commit_seconds",
            "Time to write and commit one batch",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.delivery_seconds = Histogram(
            "sink_delivery_seconds",
            "Time from request to answer for POST /events",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.pending_events = Gauge(
            "sink_pending_events",
            "Events waiting for a group commit",
            registry=r,
            multiprocess_mode="livesum",  # with serve --workers N: every worker's, added up
        )

    def _add_database_metrics(self, r: CollectorRegistry) -> None:
        self.db_pool_in_use = Gauge(
            "sink_db_pool_in_use",
            "Database connections in use",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.db_pool_size = Gauge(
            "sink_db_pool_size",
            "Database connections open",
            registry=r,
            multiprocess_mode="livesum",
        )

    def _add_backfill_metrics(self, r: CollectorRegistry) -> None:
        """The backfill queue and the Studio REST API calls it makes."""
        self.backfill_queue_depth = Gauge(
            "sink_backfill_queue_depth",
            "Backfill items waiting or running",
            registry=r,
            multiprocess_mode="livemostrecent",  # read from the database: the same for all
        )
        self.backfill_items_waiting = Gauge(
            "sink_backfill_items_waiting",
            "Backfill items waiting for their account's credentials (waiting_for_credentials)",
            registry=r,
            multiprocess_mode="livemostrecent",  # read from the database, like the depth
        )
        self.backfill_items = Counter(
            "sink_backfill_items",
            "Backfill items finished, by outcome (done, failed, gone)",
            ["outcome"],
            registry=r,
        )
        self.studio_api_calls = Counter(
            "sink_studio_api_calls",
            "Studio REST API calls by endpoint and HTTP status",
            ["endpoint", "status"],
            registry=r,
        )
        self.studio_api_retries = Counter(
            "sink_studio_api_retries", "Studio REST API calls retried", ["endpoint"], registry=r
        )


KNOWN_TYPE_PREFIXES = ("com.twilio.studio.", "com.twilio.eventstreams.")


def type_label(event_type: str | None) -> str:
    """Bounded label for an event type: Studio and Event Streams types as is, else 'other'."""
    if event_type and event_type.startswith(KNOWN_TYPE_PREFIXES) and len(event_type) < 80:
        return event_type
    return "other"
