"""Mail and the tokens it carries: verification at sign-up, password reset, delivery off the request path."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import threading
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from litestar import Litestar
from litestar.testing import AsyncTestClient

from app.http.app import create_app
from app.kit.mail import ConsoleBackend, Mail, Outbox
from tests.support.accounts import PASSWORD, bearer, log_in, refresh, sign_up
from tests.support.databases import FAST_HASHING, Databases
from tests.support.live_server import free_port

Client = AsyncTestClient[Litestar]
DEVELOPMENT_MAIL = "development mail backend"
SAME_ANSWER = {"detail": "If an account has this address, a mail is on its way"}


def token_in(body: str) -> str:
    found = re.search(r"^    (\S+)\r?$", body, re.MULTILINE)
    assert found, body
    return found[1]


async def mailed(caplog: pytest.LogCaptureFixture, to: str, subject: str, count: int = 1) -> list[str]:
    """The bodies of the mails the console backend printed to `to` with `subject`, once there are `count` of them."""
    async with asyncio.timeout(10):
        while True:
            bodies = [
                record.getMessage().split("\n\n", 1)[1]
                for record in caplog.records
                if record.name == "app.mail" and DEVELOPMENT_MAIL in record.getMessage()
                if f"\nTo: {to}\nSubject: {subject}\n" in record.getMessage()
            ]
            if len(bodies) >= count:
                return bodies
            await asyncio.sleep(0.02)


class Inbox:
    """An SMTP server's end: keeps what it accepts; can hold each mail back, and refuse the first ones."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.open = threading.Event()
        self.open.set()
        self.refusals = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.to_thread(self.open.wait, 30)
        if self.refusals:
            self.refusals -= 1
            return "451 4.3.0 Try again later"
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        return "250 OK"


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    handler, port = Inbox(), free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        handler.open.set()
        controller.stop()


async def test_sign_up_mails_a_verification_token_over_smtp_without_waiting_and_retries(
    pg: Databases, api_db: str, inbox: tuple[Inbox, int], caplog: pytest.LogCaptureFixture
) -> None:
    server, port = inbox
    smtp = {"mail_backend": "smtp", "smtp_host": "127.0.0.1", "smtp_port": port, "smtp_starttls": False}
    app = create_app(pg.settings(api_db, **FAST_HASHING, **smtp, mail_from="Bikes <bikes@example.com>"))
    async with AsyncTestClient(app) as client:
        app.state.outbox.retry_delay = 0.05
        server.open.clear()  # the mail server takes its time ...
        server.refusals = 1  # ... then refuses the first try
        async with asyncio.timeout(5):
            await sign_up(client, "alice")  # answered while the mail is still on its way
        assert server.messages == []
        server.open.set()
        async with asyncio.timeout(10):
            while not server.messages:  # noqa: ASYNC110  (polling with a deadline)
                await asyncio.sleep(0.02)
        (message,) = server.messages
        assert (message["To"], message["From"]) == ("alice@example.com", "Bikes <bikes@example.com>")
        assert message["Subject"] == "Confirm your email address"
        token = token_in(message.get_content())
        assert "mail 'Confirm your email address' to alice@example.com not sent (SMTPDataError" in caplog.text
        assert token not in caplog.text

        tokens = await log_in(client, "alice")
        assert (await client.get("/api/v1/me", headers=bearer(tokens))).json()["email_verified"] is False
        assert (await client.post("/api/v1/verify-email", json={"token": token})).status_code == 204
        assert (await client.get("/api/v1/me", headers=bearer(tokens))).json()["email_verified"] is True
        again = await client.post("/api/v1/verify-email", json={"token": token})
        assert (again.status_code, again.json()["detail"]) == (
            400,
            "The token is invalid, used already or expired; ask for a new one",
        )


async def test_a_password_reset_mails_registered_addresses_only_and_ends_every_session(
    client: Client, pg: Databases, api_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    await sign_up(client, "alice")
    sessions = [await log_in(client, "alice"), await log_in(client, "alice")]
    unknown = await client.post("/api/v1/password-reset", json={"email": "nobody@example.com"})
    known = await client.post("/api/v1/password-reset", json={"email": "ALICE@example.com"})
    assert (unknown.status_code, unknown.json()) == (known.status_code, known.json()) == (202, SAME_ANSWER)
    (body,) = await mailed(caplog, "alice@example.com", "Reset your password")
    assert "nobody@example.com" not in caplog.text  # the outbox is in order: its mail would have come first
    token = token_in(body)
    (stored,) = await pg.fetch(
        api_db,
        "SELECT token_hash, expires_at - created_at AS valid FROM account_tokens WHERE purpose = 'reset_password'",
    )
    assert (stored["token_hash"], stored["valid"].total_seconds()) == (hashlib.sha256(token.encode()).hexdigest(), 1800)

    for bad in ({"token": "not the token", "new_password": "a new secret"}, {"token": token, "new_password": "short"}):
        assert (await client.post("/api/v1/password-reset/confirm", json=bad)).status_code == 400
    reset = {"token": token, "new_password": "a new secret"}
    assert (await client.post("/api/v1/password-reset/confirm", json=reset)).status_code == 204
    for tokens in sessions:
        assert (await client.get("/api/v1/me", headers=bearer(tokens))).status_code == 401
        assert (await refresh(client, tokens["refresh_token"])).status_code == 401
    assert (await client.post("/api/v1/login", json={"username": "alice", "password": PASSWORD})).status_code == 401
    tokens = await log_in(client, "alice", "a new secret")
    assert (await client.get("/api/v1/me", headers=bearer(tokens))).json()["email_verified"] is True  # it got mail
    assert (await client.post("/api/v1/password-reset/confirm", json=reset)).status_code == 400  # used

    # One mail a minute at most; an expired token is refused like a used one.
    await pg.fetch(api_db, "UPDATE account_tokens SET created_at = created_at - interval '2 minutes'")
    assert (await client.post("/api/v1/password-reset", json={"email": "alice@example.com"})).status_code == 202
    later = token_in((await mailed(caplog, "alice@example.com", "Reset your password", count=2))[1])
    await pg.fetch(api_db, "UPDATE account_tokens SET expires_at = now() WHERE used_at IS NULL")
    expired = {"token": later, "new_password": "another secret"}
    assert (await client.post("/api/v1/password-reset/confirm", json=expired)).status_code == 400


async def test_required_verification_refuses_login_until_the_address_is_verified(
    pg: Databases, api_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with AsyncTestClient(create_app(pg.settings(api_db, **FAST_HASHING, require_verified_email=True))) as client:
        await sign_up(client, "alice")
        await mailed(caplog, "alice@example.com", "Confirm your email address")
        refused = await client.post("/api/v1/login", json={"username": "alice", "password": PASSWORD})
        assert refused.status_code == 403
        assert refused.json()["detail"].startswith("Verify your email address first")
        wrong = await client.post("/api/v1/login", json={"username": "alice", "password": "not it"})
        assert wrong.status_code == 401  # only the right password learns that the address is unverified
        await pg.fetch(api_db, "UPDATE account_tokens SET created_at = created_at - interval '2 minutes'")
        for email in ("nobody@example.com", "alice@example.com"):
            resent = await client.post("/api/v1/verify-email/resend", json={"email": email})
            assert (resent.status_code, resent.json()) == (202, SAME_ANSWER)
        bodies = await mailed(caplog, "alice@example.com", "Confirm your email address", count=2)
        assert (await client.post("/api/v1/verify-email", json={"token": token_in(bodies[1])})).status_code == 204
        await log_in(client, "alice")


async def test_the_unauthenticated_endpoints_and_password_checks_share_the_per_address_limit(
    pg: Databases, api_db: str
) -> None:
    async with AsyncTestClient(create_app(pg.settings(api_db, **FAST_HASHING, rate_limit_per_minute=8))) as client:
        await sign_up(client, "alice")
        headers = bearer(await log_in(client, "alice"))
        calls: list[tuple[str, str, dict[str, Any]]] = [
            ("POST", "/api/v1/refresh", {"refresh_token": "x"}),
            ("POST", "/api/v1/password-reset", {"email": "a@example.com"}),
            ("POST", "/api/v1/password-reset/confirm", {"token": "x", "new_password": "a new secret"}),
            ("POST", "/api/v1/verify-email", {"token": "x"}),
            ("POST", "/api/v1/verify-email/resend", {"email": "a@example.com"}),
            ("POST", "/api/v1/me/password", {"current_password": "x", "new_password": "a new secret"}),
            ("DELETE", "/api/v1/me", {"password": "x"}),
        ]
        first = [(await client.request(m, url, json=body, headers=headers)).status_code for m, url, body in calls[:6]]
        assert first == [401, 202, 400, 400, 202, 403]
        for method, url, body in calls:
            assert (await client.request(method, url, json=body, headers=headers)).status_code == 429, url
        assert (await client.get("/api/v1/me", headers=headers)).status_code == 200  # reads are not limited


async def test_a_closed_outbox_leaves_no_mail_thread_behind() -> None:
    before = {thread for thread in threading.enumerate() if thread.name == "mail"}
    outbox = Outbox(ConsoleBackend())
    outbox.start()
    for n in range(6):
        outbox.send(Mail(to=f"rider{n}@example.com", subject="Hello", body="a body"))
    await outbox.close()
    async with asyncio.timeout(10):
        while {thread for thread in threading.enumerate() if thread.name == "mail"} - before:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
