"""The API's OpenAPI document and the pages that show it, from assets pinned in a PyPI package: nothing from a CDN.

`drf-spectacular-sidecar` ships Swagger UI 5 (which renders OpenAPI 3.1) and Redoc as plain files; they need no
Django. The pages load them from this service, so the docs work offline and never change under a release.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from pathlib import Path

from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, RedocRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Operation, RequestBody
from litestar.router import Router
from litestar.static_files import create_static_files_router

DOCS_PATH = "/schema"
ASSETS_PATH = f"{DOCS_PATH}/assets"
_ASSETS = Path(str(importlib.resources.files("drf_spectacular_sidecar") / "static" / "drf_spectacular_sidecar"))
_SWAGGER = f"{ASSETS_PATH}/swagger-ui-dist"
_FAVICON = f"<link rel='icon' type='image/png' href='{_SWAGGER}/favicon-32x32.png'>"


def openapi_config(version: str) -> OpenAPIConfig:
    """The document at /schema/openapi.json; Redoc at /schema (and /schema/redoc), Swagger UI at /schema/swagger."""
    return OpenAPIConfig(
        title="bikerental-api",
        version=version,
        description="User accounts for the bike-rental service.",
        path=DOCS_PATH,
        render_plugins=[
            RedocRenderPlugin(
                js_url=f"{ASSETS_PATH}/redoc/bundles/redoc.standalone.js",
                google_fonts=False,
                path=["/", "/redoc"],
                favicon=_FAVICON,
            ),
            SwaggerRenderPlugin(
                js_url=f"{_SWAGGER}/swagger-ui-bundle.js",
                css_url=f"{_SWAGGER}/swagger-ui.css",
                standalone_preset_js_url=f"{_SWAGGER}/swagger-ui-standalone-preset.js",
                favicon=_FAVICON,
            ),
            JsonRenderPlugin(),
        ],
    )


def docs_assets() -> Router:
    """The pinned Swagger UI and Redoc files, served under /schema/assets."""
    return create_static_files_router(
        path=ASSETS_PATH, directories=[_ASSETS], include_in_schema=False, opt={"exclude_from_auth": True}
    )


@dataclass
class OptionalBodyOperation(Operation):
    """An operation whose request body may be left out (Litestar documents every body as required)."""

    def __post_init__(self) -> None:
        if isinstance(self.request_body, RequestBody):
            self.request_body.required = False
