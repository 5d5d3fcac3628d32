"""Mail off the request path: handlers drop mails into an outbox, and a task of the service delivers them, with retries.

A request never waits on the mail server. A mail that cannot be sent is logged (who and what, never the body, which
carries a token) and tried again, a few times, with a growing delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import smtplib
import ssl
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage

from app.settings import Settings

logger = logging.getLogger("app.mail")


@dataclass(frozen=True)
class Mail:
    to: str
    subject: str
    body: str


class MailBackend(ABC):
    @abstractmethod
    def send(self, mail: Mail) -> None:
        """Deliver the mail or raise; blocking (the outbox runs it in a thread)."""


class ConsoleBackend(MailBackend):
    """Sends nothing: logs each mail whole, marked, for development."""

    def send(self, mail: Mail) -> None:
        logger.warning(
            "development mail backend (MAIL_BACKEND=console), not sent:\nTo: %s\nSubject: %s\n\n%s",
            mail.to,
            mail.subject,
            mail.body,
        )


class SmtpBackend(MailBackend):
    """Sends through an SMTP server: STARTTLS and login when configured."""

    TIMEOUT_SECONDS = 20.0

    def __init__(self, settings: Settings) -> None:
        self.sender = settings.mail_from
        self.host, self.port = settings.smtp_host, settings.smtp_port
        self.starttls = settings.smtp_starttls
        self.username = settings.smtp_username
        self.password = settings.smtp_password.get_secret_value() if settings.smtp_password else ""

    def send(self, mail: Mail) -> None:
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = self.sender, mail.to, mail.subject
        message.set_content(mail.body)
        with smtplib.SMTP(self.host, self.port, timeout=self.TIMEOUT_SECONDS) as smtp:
            if self.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if self.username:
                smtp.login(self.username, self.password)
            smtp.send_message(message)


def mail_backend(settings: Settings) -> MailBackend:
    return SmtpBackend(settings) if settings.mail_backend == "smtp" else ConsoleBackend()


class Outbox:
    """A bounded queue of mails and the task that delivers them, a few at a time, each on a thread."""

    def __init__(
        self,
        backend: MailBackend,
        *,
        attempts: int = 4,
        retry_delay: float = 2.0,
        capacity: int = 1000,
        concurrency: int = 4,
    ) -> None:
        self.backend = backend
        self.attempts = attempts
        self.retry_delay = retry_delay  # doubles after each failed attempt
        self._queue: asyncio.Queue[Mail] = asyncio.Queue(capacity)
        self._slots = asyncio.Semaphore(concurrency)
        self._threads = DaemonThreads(concurrency)  # a thread for each delivery at once
        self._deliveries: set[asyncio.Task[None]] = set()
        self._worker: asyncio.Task[None] | None = None

    def send(self, mail: Mail) -> None:
        """Queue the mail and return at once; a full outbox (the mail server down for long) drops it, logged."""
        try:
            self._queue.put_nowait(mail)
        except asyncio.QueueFull:
            logger.error("the outbox is full: mail %r to %s dropped", mail.subject, mail.to)

    def start(self) -> None:
        self._worker = asyncio.create_task(self._run(), name="outbox")

    async def close(self, grace: float = 5.0) -> None:
        """Give queued and retrying mails `grace` seconds to go out, then stop."""
        try:
            async with asyncio.timeout(grace):
                await self._queue.join()
        except TimeoutError:
            logger.error("stopping with %d mail(s) not sent", self._queue.qsize() + len(self._deliveries))
        finally:
            tasks = [*self._deliveries, *([self._worker] if self._worker else [])]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._threads.close()

    async def _run(self) -> None:
        while True:
            mail = await self._queue.get()
            await self._slots.acquire()
            delivery = asyncio.create_task(self._deliver(mail))
            self._deliveries.add(delivery)
            delivery.add_done_callback(self._delivered)

    def _delivered(self, delivery: asyncio.Task[None]) -> None:
        self._deliveries.discard(delivery)
        self._slots.release()
        self._queue.task_done()

    async def _deliver(self, mail: Mail) -> None:
        for attempt in range(1, self.attempts + 1):
            try:
                await self._threads.run(self.backend.send, mail)
            except Exception as exc:
                # The exception's type only: a server's reply may quote what it was sent.
                failure = f"{type(exc).__name__}, attempt {attempt} of {self.attempts}"
                if attempt == self.attempts:
                    logger.error("mail %r to %s not sent (%s); giving up", mail.subject, mail.to, failure)
                    return
                delay = self.retry_delay * 2 ** (attempt - 1)
                logger.warning("mail %r to %s not sent (%s); retrying in %g s", mail.subject, mail.to, failure, delay)
                await asyncio.sleep(delay)
            else:
                return


class DaemonThreads:
    """Threads for blocking sends, started on first use and then kept.

    Not an executor: its threads are joined at exit, and one stuck on a silent mail server would hold a stopping
    instance past its grace period; these end at their socket time-out, or with the process. Not a thread per mail
    either: `Thread.start` waits until the new thread runs, a stall of the event loop while the hashers hold the cores.
    """

    def __init__(self, count: int) -> None:
        self.count = count
        self._started = 0
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()

    async def run(self, blocking: Callable[[Mail], None], mail: Mail) -> None:
        """Run `blocking(mail)` on one of the threads; its exception, if any, is raised here."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def settle(error: BaseException | None) -> None:
            if done.done():
                return  # the delivery was cancelled meanwhile
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)

        def job() -> None:
            error: BaseException | None = None
            try:
                blocking(mail)
            except BaseException as exc:
                error = exc
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits for the answer
                loop.call_soon_threadsafe(settle, error)

        self._jobs.put(job)
        if self._started < self.count:
            self._started += 1
            threading.Thread(target=self._work, name="mail", daemon=True).start()
        await done

    def close(self) -> None:
        """Let each thread end once it is done with what it runs now."""
        for _ in range(self._started):
            self._jobs.put(None)
        self._started = 0

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            job()
