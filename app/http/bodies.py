"""Request bodies decoded strictly: what the document calls a boolean must be one.

Litestar converts bodies in msgspec's lax mode, made for query strings, so `{"is_active": 0}` would pass as false
and `"1"` as a number. This hook decodes each JSON body once more, strictly, before the handler's own parsing.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from litestar import Request
from litestar.exceptions import ValidationException

_AT_FIELD = re.compile(r"at `\$\.([A-Za-z_][A-Za-z0-9_]*)")


def _body_struct(request: Request[Any, Any, Any]) -> type[msgspec.Struct] | None:
    """The struct the handler takes its body as, if any (a lookup in the signature Litestar parsed once)."""
    data = request.route_handler.parsed_fn_signature.parameters.get("data")
    annotation = data.annotation if data is not None else None
    return annotation if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct) else None


async def strict_body(request: Request[Any, Any, Any]) -> None:
    """Refuse a body that only lax conversion would accept, with the 400 Litestar gives for any invalid body."""
    if request.method == "GET":
        return  # no GET takes a body: the authenticated reads skip the signature lookup
    struct = _body_struct(request)
    if struct is None:
        return
    body = await request.body()
    try:
        msgspec.json.decode(body, type=struct, strict=True)
    except msgspec.ValidationError as exc:
        try:
            msgspec.json.decode(body, type=struct, strict=False)
        except msgspec.DecodeError:
            return  # refused in either mode: Litestar's own parsing says why
        field = _AT_FIELD.search(str(exc))
        error = {"message": str(exc), "key": field.group(1) if field else "body", "source": "body"}
        raise ValidationException(f"Validation failed for {request.method} {request.url.path}", extra=[error]) from exc
    except msgspec.DecodeError:
        return  # malformed JSON: Litestar's own parsing says so
