"""What the OpenAPI document says beyond what Litestar derives: Retry-After headers, links, operation ids."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar.handlers.http_handlers import HTTPRouteHandler
from litestar.openapi.spec import Link, OpenAPIHeader, OpenAPIResponse, Operation, RequestBody, Schema
from litestar.openapi.spec.enums import OpenAPIType
from litestar.types import Method

# Statuses whose answers carry Retry-After.
RETRY_STATUSES = ("429", "503")


def operation_id(handler: HTTPRouteHandler, method: Method, path: list[str | Any]) -> str:
    """The handler's name in camel case (`listUsers`): what generated clients name their functions after."""
    first, *rest = handler.handler_name.split("_")
    return first + "".join(word.title() for word in rest)


@dataclass
class ApiOperation(Operation):
    """An operation of this API: its 429 and 503 answers document their `Retry-After` header."""

    def __post_init__(self) -> None:
        retry_after = OpenAPIHeader(
            description="Seconds to wait before retrying", schema=Schema(type=OpenAPIType.INTEGER, minimum=0)
        )
        for status, response in (self.responses or {}).items():
            if status in RETRY_STATUSES and isinstance(response, OpenAPIResponse):
                response.headers = {**(response.headers or {}), "Retry-After": retry_after}


def linked(status: int, **links: Link) -> type[ApiOperation]:
    """An operation class whose `status` answer names `links`: the calls a client makes next with what it got."""

    @dataclass
    class LinkedOperation(ApiOperation):
        def __post_init__(self) -> None:
            super().__post_init__()
            response = (self.responses or {})[str(status)]
            assert isinstance(response, OpenAPIResponse)  # Litestar builds the success answer itself
            response.links = {**(response.links or {}), **links}

    return LinkedOperation


@dataclass
class OptionalBodyOperation(ApiOperation):
    """An operation whose request body may be left out (Litestar documents every body as required)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.request_body, RequestBody):
            self.request_body.required = False
