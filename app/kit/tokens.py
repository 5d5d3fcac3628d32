"""Random bearer secrets (refresh tokens, mailed tokens) and the digest the database keeps instead of them."""

from __future__ import annotations

import hashlib
import secrets


def new_token() -> tuple[str, str]:
    """A fresh random token and its digest: the token goes to the client, only the digest to the database."""
    token = secrets.token_urlsafe(32)
    return token, token_digest(token)


def token_digest(token: str) -> str:
    """SHA-256 in hex. The tokens carry 256 random bits: a slow, salted hash such as Argon2 would add nothing."""
    return hashlib.sha256(token.encode()).hexdigest()
