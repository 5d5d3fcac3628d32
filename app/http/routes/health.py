"""GET /health, /health/live and /health/ready: for people, for process supervisors, for load balancers."""

from __future__ import annotations

from litestar import Response, Router, get
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from sqlalchemy.ext.asyncio import AsyncEngine

from app.http.deps import Drain
from app.http.errors import DATABASE_RETRY_AFTER, database_is_unavailable
from app.http.openapi import ApiOperation
from app.http.schemas import Health, Readiness
from app.repositories.health import SchemaReadiness, database_answers


@get(
    "/health",
    operation_class=ApiOperation,
    exclude_from_auth=True,
    summary="Health check",
    responses={503: ResponseSpec(Health, description="The database does not answer", generate_examples=False)},
)
async def health(engine: NamedDependency[AsyncEngine]) -> Response[Health]:
    """200 when the service and its database answer, 503 when the database does not."""
    try:
        await database_answers(engine)
    except Exception as exc:
        if not database_is_unavailable(exc):
            raise
        return Response(
            Health(status="unavailable", database="unreachable"),
            status_code=503,
            headers={"Retry-After": str(DATABASE_RETRY_AFTER)},
        )
    return Response(Health(status="ok", database="ok"))


@get("/health/live", exclude_from_auth=True, summary="Liveness")
async def live() -> Health:
    """200 while the process answers at all; it asks nothing of the database (a supervisor restarts on failure)."""
    return Health(status="ok", database="not checked")


@get(
    "/health/ready",
    operation_class=ApiOperation,
    exclude_from_auth=True,
    summary="Readiness",
    responses={
        503: ResponseSpec(
            Readiness,
            description="Send no traffic: the database does not answer, or this release cannot run on its schema",
            generate_examples=False,
        )
    },
)
async def ready(
    engine: NamedDependency[AsyncEngine],
    schema_readiness: NamedDependency[SchemaReadiness],
    drain: NamedDependency[Drain],
) -> Response[Readiness]:
    """200 when the database answers through the pool, this instance's release can run on its schema (at its head,
    ahead through a newer release's expand revisions, or behind with only contract revisions pending), and the
    instance is not draining before it stops."""
    if drain.started:
        return _not_ready(Readiness(status="draining", database="not checked", schema="not checked"))
    try:
        fit = await schema_readiness.check(engine)
    except Exception as exc:
        if not database_is_unavailable(exc):
            raise
        return _not_ready(Readiness(status="not ready", database="unreachable", schema="unknown"))
    if not fit.fits:
        return _not_ready(Readiness(status="not ready", database="ok", schema=f"not compatible: {fit.said}"))
    return Response(Readiness(status="ready", database="ok", schema=fit.said))


def _not_ready(body: Readiness) -> Response[Readiness]:
    return Response(body, status_code=503, headers={"Retry-After": str(DATABASE_RETRY_AFTER)})


router = Router("/", route_handlers=[health, live, ready])
