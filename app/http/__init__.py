"""The HTTP layer: the Litestar app, its handlers, request/response schemas and error mapping."""
