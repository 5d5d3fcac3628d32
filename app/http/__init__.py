"""The HTTP layer: the Litestar app, its routes, request/response schemas, security and error mapping."""
