"""Helpers the tests share: databases, live servers, PgBouncer, accounts, outside tools."""
