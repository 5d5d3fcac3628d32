"""Around every request: its id (X-Request-ID), one access log line, and the request metrics; pure ASGI, for speed."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import Counter, Histogram

from app.kit.logs import REQUEST_ID, AccessLog
from app.kit.metrics import Metrics

REQUEST_ID_HEADER = b"x-request-id"
# An id from a proxy or a client is kept only when it cannot break a log line or a header: else we make one.
_WELL_FORMED_ID = re.compile(rb"[A-Za-z0-9._-]{1,128}")
# Label values stay a small fixed set whatever clients send: the route template, never the raw path.
UNMATCHED_ROUTE = "unmatched"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def request_id_of(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The request's well-formed X-Request-ID, else a new one."""
    for name, value in headers:
        if name == REQUEST_ID_HEADER:
            if _WELL_FORMED_ID.fullmatch(value):
                return value.decode("ascii")
            break
    return os.urandom(16).hex()  # as random as a uuid4's hex, at a fraction of the cost


class RequestObserver:
    """Wraps the app's ASGI handler: sees every request, matched or not, and every answer, errors included."""

    def __init__(self, app: ASGIApp, metrics: Metrics | None, access_log: AccessLog) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log
        # The labelled series of each (method, route, status): looked up once, not on every request.
        self._series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        method = scope["method"] if scope["method"] in _METHODS else "other"
        path = scope["path"]  # before routing: a mounted app's routing rewrites it
        request_id = request_id_of(scope["headers"])
        echoed = (REQUEST_ID_HEADER, request_id.encode("ascii"))
        status = 500  # what the client gets if the app fails before it answers
        counted = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, counted
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), echoed]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                # Counted before the answer's last bytes leave: a client that has its answer sees it in /metrics.
                counted = True
                self._count(scope, method, path, status, time.perf_counter() - started, request_id)
            await send(message)

        token = REQUEST_ID.set(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if not counted:
                self._count(scope, method, path, status, time.perf_counter() - started, request_id)
            REQUEST_ID.reset(token)

    def _count(self, scope: Scope, method: str, path: str, status: int, elapsed: float, request_id: str) -> None:
        route = scope.get("path_template") or UNMATCHED_ROUTE
        if self.metrics is not None:
            series = self._series.get((method, route, status))
            if series is None:
                series = self._series[method, route, status] = (
                    self.metrics.requests.labels(method, route, str(status)),
                    self.metrics.latency.labels(method, route),
                )
            series[0].inc()
            series[1].observe(elapsed)
        if self.access_log.enabled:
            client = scope.get("client")
            # The path alone, never the query string: it could carry what no log should.
            self.access_log.write(method, route, path, status, elapsed, client[0] if client else None, request_id)
