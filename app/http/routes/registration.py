"""POST /api/v1/register."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, Response, Router, post
from litestar.datastructures import ResponseHeader
from litestar.di import NamedDependency
from litestar.openapi.spec import Example, Link
from litestar.params import Body

from app.http.deps import Hashing, SessionMaker
from app.http.openapi import linked
from app.http.problems import CLOSED, problems
from app.http.routes.users import get_user
from app.http.schemas import UserCreate, UserRead, user_read
from app.http.security import AddressRateLimit
from app.kit.mail import Outbox
from app.kit.metrics import Metrics
from app.services.mailed_tokens import MailedTokens
from app.services.registration import register_user


@post(
    "/register",
    exclude_from_auth=True,
    summary="Register a user",
    status_code=201,
    responses=problems(
        400,
        409,
        413,
        429,
        503,
        described={409: "The username or email is taken (ignoring case); `field` names it"},
        examples={409: {"detail": "This username is already registered", "field": "username"}},
    ),
    response_headers=[
        ResponseHeader(name="Location", description="The new user's URL (GET it with a token)", documentation_only=True)
    ],
    response_description="The new user, with the `user` role",
    operation_class=linked(
        201,
        LogIn=Link(
            operation_id="login",
            request_body={"username": "$request.body#/username", "password": "$request.body#/password"},
            description="Log in as the new user",
        ),
    ),
)
async def register(
    data: Annotated[
        UserCreate,
        Body(
            examples=[
                Example(
                    summary="The guide's example",
                    value={
                        "username": "test",
                        "email": "test@example.com",
                        "password": "secret123",
                        "full_name": "Test User",
                    },
                )
            ],
            schema_extra=CLOSED,
        ),
    ],
    session_maker: SessionMaker,
    hashing: Hashing,
    outbox: NamedDependency[Outbox],
    mails: NamedDependency[MailedTokens],
    metrics: NamedDependency[Metrics],
    request: Request[Any, Any, Any],
) -> Response[UserRead]:
    """Create an account with the `user` role, and mail it a token that verifies the address. The password is stored
    only as an Argon2id hash."""
    user = await register_user(
        session_maker,
        hashing,
        outbox,
        mails,
        username=data.username,
        email=data.email,
        password=data.password,
        full_name=data.full_name,
    )
    metrics.sign_ups.inc()
    location = request.app.route_reverse(get_user, user_id=user.id)
    return Response(user_read(user), status_code=201, headers={"Location": location})


# Anyone may call it: throttled per client address.
router = Router("/", route_handlers=[register], middleware=[AddressRateLimit])
