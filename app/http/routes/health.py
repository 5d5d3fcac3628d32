"""GET /health: the service and its database answer."""

from __future__ import annotations

from litestar import Response, get
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from sqlalchemy.ext.asyncio import AsyncEngine

from app.http.errors import DATABASE_RETRY_AFTER, database_is_unavailable
from app.http.schemas import Health
from app.repositories.health import database_answers


@get(
    "/health",
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
