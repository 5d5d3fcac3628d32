"""Every text a request carries follows the document: NUL is refused only where the document says so."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import jsonschema
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.support.accounts import PASSWORD, bearer, log_in, sign_up

Client = AsyncTestClient[Litestar]
Body = dict[str, Any]
_names = itertools.count()

# A valid body of every operation that takes a JSON body with text in it; each request gets fresh names.
BODIES: dict[str, Callable[[], Body]] = {
    "POST /api/v1/register": lambda: {
        "username": f"rider{(n := next(_names))}",
        "email": f"rider{n}@example.com",
        "password": PASSWORD,
        "full_name": "Rider",
    },
    "POST /api/v1/login": lambda: {"username": "reader", "password": PASSWORD},
    "POST /api/v1/refresh": lambda: {"refresh_token": "r" * 43},
    "POST /api/v1/password-reset": lambda: {"email": "reader@example.com"},
    "POST /api/v1/password-reset/confirm": lambda: {"token": "t" * 43, "new_password": "a new password"},
    "POST /api/v1/verify-email": lambda: {"token": "t" * 43},
    "POST /api/v1/verify-email/resend": lambda: {"email": "reader@example.com"},
    "DELETE /api/v1/me": lambda: {"password": "not the password"},
    "POST /api/v1/me/password": lambda: {"current_password": "not the password", "new_password": "a new password"},
}


def _resolve(document: Body, schema: Body) -> Body:
    while "$ref" in schema or "allOf" in schema:
        ref = schema["$ref"] if "$ref" in schema else schema["allOf"][0]["$ref"]
        schema = document["components"]["schemas"][ref.rsplit("/", 1)[1]]
    return schema


def _text_fields(document: Body) -> dict[str, Body]:
    """Operation -> its JSON body's schema, for every operation whose body has a text field."""
    found = {}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            content = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if content is None:
                continue
            schema = _resolve(document, content["schema"])
            if any(_resolve(document, field).get("type") == "string" for field in schema["properties"].values()):
                found[f"{method.upper()} {path}"] = schema
    return found


async def test_nul_in_any_text_field_is_answered_as_the_document_says(client: Client) -> None:
    await sign_up(client, "reader")
    document = (await client.get("/schema/openapi.json")).json()
    operations = _text_fields(document)
    assert set(operations) == set(BODIES), "give every operation with text in its body a valid body here"
    for operation, schema in operations.items():
        method, path = operation.split(" ")
        for field, field_schema in schema["properties"].items():
            if _resolve(document, field_schema).get("type") != "string":
                continue
            answers, sent = {}, {}
            for character in ("\x00", "\x01"):  # NUL, and a control character PostgreSQL takes
                body = BODIES[operation]()
                body[field] = sent[character] = body[field][:1] + character + body[field][1:]
                headers = bearer(await log_in(client, "reader")) if path.startswith("/api/v1/me") else {}
                response = await client.request(method, path, json=body, headers=headers)
                answers[character] = response
                documented = document["paths"][path][method.lower()]["responses"]
                assert str(response.status_code) in documented, f"{operation} {field}: {response.text}"
            allowed = jsonschema.Draft202012Validator(_resolve(document, field_schema)).is_valid(sent["\x00"])
            if allowed:  # NUL is a character like any other here: the same answer as another control character
                assert answers["\x00"].status_code == answers["\x01"].status_code, f"{operation} {field}"
            else:
                assert answers["\x00"].status_code == 400, f"{operation} {field}"
                assert answers["\x00"].json()["errors"][0]["key"] == field
