"""The error answers each operation documents: one body shape, and what each status means here."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example
from msgspec import Meta


class ErrorBody(msgspec.Struct):
    """Every error the API answers: the status again, what went wrong, and details where there are some."""

    status_code: Annotated[int, Meta(examples=[409])]
    detail: Annotated[str, Meta(examples=["This username is already registered"])]
    extra: Annotated[Any, Meta(description="details, such as the field at fault")] = None


MEANINGS = {
    400: "The request is malformed or a value breaks a rule; `extra` names the field",
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
    """The `responses=` of an operation that can answer `statuses`, each with the one error body.

    `described` words a status for this operation where the general meaning says too little; `examples` shows a body.
    """
    meanings, shown = {**MEANINGS, **(described or {})}, examples or {}
    return {
        status: ResponseSpec(
            ErrorBody,
            description=meanings[status],
            generate_examples=False,
            examples=[Example(value=shown[status])] if status in shown else None,
        )
        for status in statuses
    }


# What a body of this API's says in its schema: unknown fields are refused (msgspec's forbid_unknown_fields, which
# the generated schema does not show by itself).
CLOSED = {"additionalProperties": False}

# Every operation that reads the database may find it unavailable; every guarded one may refuse the token.
AUTHENTICATED = (401, 503)
STAFF_ONLY = (*AUTHENTICATED, 403)
