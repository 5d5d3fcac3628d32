"""`serve --workers N`: N service processes on one listening socket, started, watched and stopped by this one."""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing
import os
import signal
import socket
import sys
import tempfile
import time
from multiprocessing.context import SpawnProcess
from pathlib import Path
from types import FrameType

from prometheus_client.multiprocess import mark_process_dead
from uvicorn.config import STARTUP_FAILURE

from app.cli.serve import DrainingServer, serve_metrics, uvicorn_config
from app.db.engine import lookup_pool_size
from app.errors import SetupError
from app.http.app import create_app
from app.http.deps import Drain
from app.kit.logs import configure_logging
from app.kit.metrics import Metrics, shared_registry
from app.kit.passwords import hash_worker_count
from app.settings import Settings

logger = logging.getLogger("app")
# A fresh interpreter per worker, as uvicorn does: forking a process that ran an event loop and threads is unsafe.
_spawn = multiprocessing.get_context("spawn")
multiprocessing.allow_connection_pickling()  # the listening socket goes to each worker
_POLL_SECONDS = 0.2


def hashers_per_worker(settings: Settings, workers: int) -> int:
    """Each worker's share of HASH_WORKERS (default: the cores), so the server runs at most that many hashes."""
    return max(1, hash_worker_count(settings) // workers)


def run_workers(settings: Settings, workers: int) -> None:
    """Serve with `workers` processes until SIGINT or SIGTERM, which each worker gets and handles as `serve` does."""
    worker_settings = settings.model_copy(update={"hash_workers": hashers_per_worker(settings, workers)})
    # Each worker has its own pools: the engine's DB_POOL_SIZE and the lookup pool's twice that.
    connections = workers * (settings.db_pool_size + lookup_pool_size(settings))
    with _listen(settings) as listener, contextlib.ExitStack() as cleanup:
        logger.info(
            "Serving on http://%s:%d: %d workers, %d password hashing thread(s) each, %d database connections at most",
            settings.api_host,
            settings.api_port,
            workers,
            worker_settings.hash_workers,
            connections,
        )
        if not settings.redis_url:
            logger.warning("Each worker keeps its own rate limits and login lockouts: set REDIS_URL to share them")
        metrics_dir = None
        if settings.metrics_enabled:
            metrics_dir = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="bikerental-metrics-")))
            # prometheus-client picks its multiprocess mode from this when a worker first imports it.
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
            if settings.metrics_port is not None:
                serve_metrics(settings, shared_registry(metrics_dir))
        Supervisor(worker_settings, workers, listener, metrics_dir).run()


def _listen(settings: Settings) -> socket.socket:
    family = socket.AF_INET6 if ":" in settings.api_host else socket.AF_INET
    try:
        listener = socket.create_server((settings.api_host, settings.api_port), family=family, backlog=2048)
    except OSError as exc:
        raise SetupError(
            f"cannot listen on {settings.api_host}:{settings.api_port}: {exc.strerror or exc}; "
            "stop what uses the port or set another API_PORT"
        ) from None
    listener.set_inheritable(True)
    return listener


class Supervisor:
    """Starts the workers, starts a new one for any that dies, and passes SIGINT and SIGTERM on to them."""

    def __init__(self, settings: Settings, count: int, listener: socket.socket, metrics_dir: Path | None) -> None:
        self.settings = settings
        self.count = count
        self.listener = listener
        self.metrics_dir = metrics_dir
        self.workers: list[SpawnProcess] = []
        self.signals: list[int] = []
        self.stopping = False

    def run(self) -> None:
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.workers = [self._start() for _ in range(self.count)]
            while self.workers:
                time.sleep(_POLL_SECONDS)
                self._pass_signals_on()
                self._reap()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for worker in self.workers:  # only after an error of our own: leave nothing behind
                worker.kill()
                worker.join()
        logger.info("All workers stopped")

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        self.signals.append(sig)

    def _start(self) -> SpawnProcess:
        worker = _spawn.Process(
            target=_worker_main,
            args=(self.settings, self.listener, self.metrics_dir, os.getpid()),
            name="bikerental-api worker",
        )
        # Born ignoring SIGINT (an ignored signal survives exec): a Ctrl-C passed on while it still imports is no
        # KeyboardInterrupt traceback; it listens once it can stop cleanly.
        handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            worker.start()
        finally:
            signal.signal(signal.SIGINT, handler)
        return worker

    def _pass_signals_on(self) -> None:
        while self.signals:
            sig = self.signals.pop(0)
            self.stopping = True
            for worker in self.workers:
                if worker.pid is not None and worker.is_alive():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(worker.pid, sig)

    def _reap(self) -> None:
        for worker in [worker for worker in self.workers if not worker.is_alive()]:
            self._bury(worker)
            if self.stopping:
                self.workers.remove(worker)
            elif worker.exitcode == STARTUP_FAILURE:
                # It failed before serving: the next one would fail the same way.
                self.workers.remove(worker)
                self.signals.append(signal.SIGINT)
                self._pass_signals_on()
                for other in self.workers:
                    self._bury(other)
                self.workers = []
                raise SetupError("a worker did not start; see the lines above")
            else:
                logger.warning("Worker %s ended (exit code %s); starting another", worker.pid, worker.exitcode)
                self.workers[self.workers.index(worker)] = self._start()

    def _bury(self, worker: SpawnProcess) -> None:
        worker.join()
        # Its gauges go (its queue and connections went with it); its counts stay in the totals.
        if self.metrics_dir is not None and worker.pid is not None:
            mark_process_dead(worker.pid, str(self.metrics_dir))  # type: ignore[no-untyped-call]


def _worker_main(settings: Settings, listener: socket.socket, metrics_dir: Path | None, parent: int) -> None:
    """One worker: the app, built here, served on the parent's socket with the drain on SIGTERM."""
    # Its own process group: a Ctrl-C at the terminal reaches the parent alone, which passes one signal on.
    os.setpgrp()
    stop: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda sig, frame: stop.append(sig))
    configure_logging(settings)
    try:
        app = create_app(settings, bootstrapped=True, metrics=Metrics(metrics_dir))
    except Exception:
        # Every worker would fail the same way: the parent stops instead of starting them again and again.
        logger.exception("A worker could not build the app")
        sys.exit(STARTUP_FAILURE)
    gc.collect()
    gc.freeze()
    if stop:
        return  # told to stop before it served anything
    drain: Drain = app.state.drain

    async def exit_with_parent() -> None:
        # Should the parent be killed outright, no signal comes: drain and stop as if one had.
        if os.getppid() != parent and not drain.started:
            server.handle_exit(signal.SIGTERM, None)

    config = uvicorn_config(app, settings, callback_notify=exit_with_parent, timeout_notify=1)
    server = DrainingServer(config, drain, settings.drain_seconds)
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=[listener])
    if not server.started:
        sys.exit(STARTUP_FAILURE)
