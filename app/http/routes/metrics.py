"""GET /metrics: Prometheus' scrape target, when METRICS_ENABLED and no METRICS_PORT of its own."""

from __future__ import annotations

from litestar import Response, Router, get
from litestar.di import NamedDependency
from prometheus_client import CONTENT_TYPE_LATEST

from app.kit.metrics import Metrics

# Litestar adds the charset to every text/ type itself.
MEDIA_TYPE = CONTENT_TYPE_LATEST.replace("; charset=utf-8", "")


@get("/metrics", exclude_from_auth=True, include_in_schema=False, sync_to_thread=False)
def metrics(metrics: NamedDependency[Metrics]) -> Response[bytes]:
    """The service's metrics in Prometheus' text format (every worker's, added up)."""
    return Response(metrics.exposition(), media_type=MEDIA_TYPE)


router = Router("/", route_handlers=[metrics])
