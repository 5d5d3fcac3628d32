"""The service's Prometheus metrics: in a registry of the app's own, or shared by several workers through files."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

# How often each worker writes its gauges for the others' scrapes; a scrape refreshes its own worker's at once.
GAUGE_REFRESH_SECONDS = 1.0


class Metrics:
    """Requests by route and status, their latency, the hash queue, pool connections in use, sign-ups, failed logins.

    With `multiprocess_dir` (prometheus-client's multiprocess mode, PROMETHEUS_MULTIPROC_DIR set before it was first
    imported) every worker writes its values to files there and any worker's scrape adds them all up.
    """

    def __init__(self, multiprocess_dir: Path | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir
        # A registry per app, not the global one: tests build many apps in one process.
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "http_requests",
            "HTTP requests answered, by method, route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "Time from a request's arrival to the end of its answer, by method and route template",
            ["method", "route"],
            registry=self.registry,
        )
        self.sign_ups = Counter("bikerental_sign_ups", "Accounts created", registry=self.registry)
        self.failed_logins = Counter(
            "bikerental_failed_logins",
            "Logins refused: unknown user, wrong password or deactivated account",
            registry=self.registry,
        )
        # Gauges of live workers only, summed: a worker that exits takes its queue and its connections with it.
        self.hash_queue = Gauge(
            "bikerental_password_hash_queue_depth",
            "Password hashes and checks waiting or running",
            multiprocess_mode="livesum",
            registry=self.registry,
        )
        self.pool_in_use = Gauge(
            "bikerental_db_pool_connections_in_use",
            "Database connections checked out, by pool (sessions: the engine's; lookup: the authenticated read's)",
            ["pool"],
            multiprocess_mode="livesum",
            registry=self.registry,
        )
        self._watched: list[tuple[Gauge, Callable[[], int]]] = []

    def watch(self, hash_queue: Callable[[], int], pools: dict[str, Callable[[], int]]) -> None:
        """Read the gauges from these (the app's lifespan hands them over once it owns them): when scraped, in one
        process; in multiprocess mode, at each refresh, since other workers' scrapes read the files."""
        pool_gauges = [(self.pool_in_use.labels(name), in_use) for name, in_use in pools.items()]
        watched = [(self.hash_queue, hash_queue), *pool_gauges]
        if self.multiprocess_dir is None:
            for gauge, read in watched:
                gauge.set_function(read)  # nothing runs between scrapes
            return
        self._watched = watched

    @property
    def polled(self) -> bool:
        """True when the gauges have to be written out periodically (`keep_refreshing`) for other workers."""
        return bool(self._watched)

    def refresh(self) -> None:
        """Bring this process's gauges up to date (multiprocess mode)."""
        for gauge, read in self._watched:
            gauge.set(read())

    async def keep_refreshing(self) -> None:
        """Refresh the gauges until cancelled: other workers' scrapes see this one's values at most
        GAUGE_REFRESH_SECONDS late."""
        while True:
            self.refresh()
            await asyncio.sleep(GAUGE_REFRESH_SECONDS)

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format: this process's, or every worker's added up."""
        self.refresh()
        return generate_latest(
            self.registry if self.multiprocess_dir is None else shared_registry(self.multiprocess_dir)
        )


def shared_registry(directory: Path) -> CollectorRegistry:
    """A registry that reads what every worker wrote to `directory` and adds it up."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    return registry
