"""The error answers each operation documents: RFC 9457 problem details, and what each status means here."""

from __future__ import annotations

from http import HTTPStatus
from typing import Annotated, Any

import msgspec
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example
from msgspec import Meta

PROBLEM_MEDIA_TYPE = "application/problem+json"


class FieldError(msgspec.Struct):
    """One value the request got wrong."""

    message: Annotated[str, Meta(examples=["Expected `str` of length >= 8"])]
    key: Annotated[str | None, Meta(description="the field at fault", examples=["password"])] = None
    source: Annotated[str | None, Meta(description="where it was: body, query, path", examples=["body"])] = None


class Problem(msgspec.Struct):
    """Every error the API answers (RFC 9457): the status again, its title, and what went wrong."""

    status: Annotated[int, Meta(examples=[409])]
    title: Annotated[str, Meta(examples=["Conflict"])]
    detail: Annotated[str, Meta(examples=["This username is already registered"])]
    type: Annotated[str, Meta(description="always `about:blank`: the status says what kind of problem")] = "about:blank"
    field: Annotated[str | None, Meta(description="409 on sign-up: the field that is taken")] = None
    errors: Annotated[list[FieldError] | None, Meta(description="400: each value at fault")] = None


def problem_body(status: int, detail: str, **extensions: Any) -> dict[str, Any]:
    """The body of an error answer; `extensions` add members such as `field` or `errors`."""
    return {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status, "detail": detail, **extensions}


MEANINGS = {
    400: "The request is malformed or a value breaks a rule; `errors` names each field at fault",
    401: "The bearer token is missing, malformed, expired, or its user is deactivated or gone",
    403: "The token's user does not hold a role this operation needs",
    404: "No user or role by that id or name",
    409: "The change contradicts the current state (a taken name, the last active admin)",
    413: "The request body is larger than the service accepts",
    429: "Too many attempts from this address; retry after `Retry-After` seconds",
    503: "The database is unavailable or the service is saturated; retry after `Retry-After` seconds",
}


def problems(
    *statuses: int, described: dict[int, str] | None = None, examples: dict[int, dict[str, Any]] | None = None
) -> dict[int, ResponseSpec]:
    """The `responses=` of an operation that can answer `statuses`, each with the problem body.

    `described` words a status for this operation where the general meaning says too little; `examples` shows a body.
    """
    meanings, shown = {**MEANINGS, **(described or {})}, examples or {}
    return {
        status: ResponseSpec(
            Problem,
            description=meanings[status],
            media_type=PROBLEM_MEDIA_TYPE,
            generate_examples=False,
            examples=[Example(value=problem_body(status, **shown[status]))] if status in shown else None,
        )
        for status in statuses
    }


# What a body of this API's says in its schema: unknown fields are refused (msgspec's forbid_unknown_fields, which
# the generated schema does not show by itself).
CLOSED = {"additionalProperties": False}

# Every operation that reads the database may find it unavailable; every guarded one may refuse the token.
AUTHENTICATED = (401, 503)
STAFF_ONLY = (*AUTHENTICATED, 403)
