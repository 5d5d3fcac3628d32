"""`just check-compat [REF]`: the previous release, running on this checkout's expand revisions, works as before.

A rollout runs the previous release's code on the new schema for minutes. This proves it can, rather than assuming
it: the previous release in a git worktree, a scratch database made and filled by its own code, this checkout's
expand revisions applied under its running service, a fresh instance of it started on the result, then driven
through a user's journey and by Schemathesis from its own OpenAPI document.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import sqlalchemy as sa
from alembic.script import ScriptDirectory

from app.cli import schemathesis
from app.cli.context import CommandContext
from app.cli.processes import answers_200, free_port, stop_group
from app.cli.schemathesis import FUZZ_ADMIN
from app.errors import SetupError
from app.migrations.lineage import listed
from app.migrations.lock import run_locked
from app.migrations.phases import EXPAND
from app.migrations.revisions import alembic_config
from app.migrations.rollout import UpgradePlan, apply_upgrade
from app.migrations.scratch import scratch_database
from app.settings import PROJECT_ROOT, Settings

STARTUP_SECONDS = 90.0
# The instances of the previous release: cheap hashing, no limits in the way of a fuzzer, logs as text.
SERVICE_SETTINGS = {
    "ENVIRONMENT": "development",
    "MAIL_BACKEND": "console",
    "RATE_LIMIT_PER_MINUTE": "1000000",
    "LOGIN_LOCKOUT_ATTEMPTS": "1000000",
    "ARGON2_MEMORY_KIB": "1024",
    "ARGON2_TIME_COST": "1",
    "ARGON2_PARALLELISM": "1",
    "HASH_WORKERS": "1",
    "DRAIN_SECONDS": "0",
    "AUTO_BACKUP": "false",
    "METRICS_ENABLED": "false",
    "LOG_FORMAT": "text",
    "API_HOST": "127.0.0.1",
}


class IncompatibleError(SetupError):
    """The previous release failed on this checkout's expand revisions."""


@dataclass(frozen=True)
class Release:
    """A commit of this project checked out beside this one, and the Python that runs it."""

    commit: str
    title: str
    root: Path
    python: str

    def run(self, env: dict[str, str], *args: str) -> str:
        """Its `python -m app ARGS`; the output, or IncompatibleError with what it said."""
        result = subprocess.run(
            [self.python, "-m", "app", *args], cwd=self.root, env=env, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            said = (result.stderr.strip() or result.stdout.strip()).splitlines()[-1:] or ["no output"]
            raise IncompatibleError(f"its `{' '.join(args)}` failed: {said[0]}")
        return result.stdout


def git(*args: str, cwd: Path = PROJECT_ROOT) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SetupError(f"git {' '.join(args)} failed: {result.stderr.strip() or result.returncode}")
    return result.stdout.strip()


def previous_release(ref: str | None) -> str:
    """REF, or the newest commit before the one that added the newest revision file."""
    if ref:
        return git("rev-parse", "--verify", f"{ref}^{{commit}}")
    newest = git("log", "-1", "--format=%H", "--", "alembic/versions")
    if not newest:
        raise SetupError("no commit adds a revision file: nothing to check")
    try:
        return git("rev-parse", "--verify", f"{newest}^")
    except SetupError:
        raise SetupError(f"{newest[:10]} added the first revisions: there is no previous release") from None


def this_checkout() -> Release:
    """This checkout as a release, run by this Python."""
    title = git("log", "-1", "--format=%h %<(60,trunc)%s").strip()
    return Release(git("rev-parse", "HEAD"), title, PROJECT_ROOT, sys.executable)


@contextmanager
def checked_out(commit: str, folder: Path) -> Iterator[Release]:
    """The commit in a git worktree under `folder`, with its environment: this one when its lock file is ours."""
    root = folder / "previous"
    git("worktree", "add", "--quiet", "--detach", str(root), commit)
    try:
        python = sys.executable
        if (root / "uv.lock").read_bytes() != (PROJECT_ROOT / "uv.lock").read_bytes():
            uv = shutil.which("uv")
            if uv is None:
                raise SetupError("the previous release locks other packages, and uv is not installed to sync them")
            synced = subprocess.run([uv, "sync", "--frozen", "--quiet"], cwd=root, capture_output=True, check=False)
            if synced.returncode != 0:
                raise SetupError(f"uv sync of the previous release failed: {synced.stderr.decode().strip()[-300:]}")
            python = str(root / ".venv" / "bin" / "python")
        yield Release(commit, git("log", "-1", "--format=%h %<(60,trunc)%s", commit).strip(), root, python)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(root)], cwd=PROJECT_ROOT, check=False)


class Instance:
    """The previous release's `python -m app serve` on a port of its own, logging to a file."""

    def __init__(self, release: Release, env: dict[str, str], log: Path) -> None:
        self.release, self.env, self.log = release, env, log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Start it and wait until it is ready; the seconds that took."""
        started = time.monotonic()
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [self.release.python, "-m", "app", "serve"],
                cwd=self.release.root,
                env={**self.env, "API_PORT": str(self.port)},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        while not answers_200(f"{self.url}/health/ready"):
            if self.process.poll() is not None:
                raise IncompatibleError(
                    f"it exited with code {self.process.returncode} at startup: {self.last_words()}"
                )
            if time.monotonic() - started > STARTUP_SECONDS:
                raise IncompatibleError(f"it was not ready after {STARTUP_SECONDS:.0f} s: {self.last_words()}")
            time.sleep(0.1)
        return time.monotonic() - started

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            stop_group(self.process, 15.0)

    def last_words(self) -> str:
        lines = [line for line in self.log.read_text(errors="replace").splitlines() if line.strip()]
        return " / ".join(lines[-3:]) or "nothing logged"


def fill(url: str, riders: int = 5) -> None:
    """Accounts and sessions made through the previous release's own service."""
    with httpx.Client(base_url=url, timeout=30) as client:
        for n in range(riders):
            body = {"username": f"rider{n}", "email": f"rider{n}@example.com", "password": "compat password"}
            _expect(client.post("/api/v1/register", json=body), 201, "a sign-up")
            _expect(client.post("/api/v1/login", json={"username": f"rider{n}", "password": "compat password"}), 200)


def journey(url: str) -> None:
    """A user's way through the API, each answer as the document says."""
    with httpx.Client(base_url=url, timeout=30) as client:
        body = {"username": "newcomer", "email": "newcomer@example.com", "password": "compat password"}
        _expect(client.post("/api/v1/register", json=body), 201, "a sign-up")
        login = _expect(client.post("/api/v1/login", json={"username": "newcomer", "password": "compat password"}), 200)
        tokens = login.json()
        refreshed = _expect(client.post("/api/v1/refresh", json={"refresh_token": tokens["refresh_token"]}), 200)
        bearer = {"Authorization": f"Bearer {refreshed.json()['access_token']}"}
        me = _expect(client.get("/api/v1/me", headers=bearer), 200, "GET /api/v1/me")
        if me.json().get("username") != "newcomer":
            raise IncompatibleError(f"GET /api/v1/me answered another user: {me.text[:200]}")
        admin_login = _expect(
            client.post("/api/v1/login", json={"username": FUZZ_ADMIN[0], "password": FUZZ_ADMIN[2]}), 200
        )
        admin = {"Authorization": f"Bearer {admin_login.json()['access_token']}"}
        page = _expect(client.get("/api/v1/users", params={"limit": 3}, headers=admin), 200, "a list page")
        if len(page.json().get("items", [])) != 3:
            raise IncompatibleError(f"a list page of 3 users answered {page.text[:200]}")
        _expect(client.post("/api/v1/logout", headers=bearer), 204, "a logout")
        _expect(client.get("/api/v1/me", headers=bearer), 401, "GET /api/v1/me after the logout")


def _expect(response: httpx.Response, status: int, what: str | None = None) -> httpx.Response:
    if response.status_code != status:
        shown = what or f"{response.request.method} {response.request.url.path}"
        raise IncompatibleError(f"{shown} answered {response.status_code}, not {status}: {response.text[:200]}")
    return response


def contract(url: str, folder: Path) -> str:
    """Schemathesis from the service's own document, as the suite runs it; a summary, or the failures."""
    schemathesis.require_schemathesis()
    report = folder / "schemathesis.json"
    run = schemathesis.command(f"{url}/schema/openapi.json", report, seed=1, phases=schemathesis.QUICK_PHASES)
    result = subprocess.run(
        run, cwd=folder, env=schemathesis.environment(), capture_output=True, text=True, check=False
    )
    summary = schemathesis.Report.read(report) if report.exists() else None
    if result.returncode != 0 or summary is None or summary.failures or summary.errors:
        found = "; ".join(str(failure)[:200] for failure in (summary.failures if summary else [])[:3])
        raise IncompatibleError(f"Schemathesis found a failure: {found or result.stdout.strip()[-600:]}")
    return str(summary)


def check_compat(ctx: CommandContext, ref: str | None) -> int:
    """Run the check; 0 when the previous release works on this checkout's expand revisions."""
    started = time.monotonic()
    commit = previous_release(ref)
    with ExitStack() as stack:
        folder = Path(tempfile.mkdtemp(prefix="check-compat-"))
        release = stack.enter_context(checked_out(commit, folder))
        print(f"Previous release: {release.title}.")
        revisions = ctx.revisions
        theirs = _release_revisions(release)
        new = [revision for revision in revisions.upgrade_order if revision not in theirs]
        if not new:
            print("This checkout adds no revision to it: nothing to check.")
            shutil.rmtree(folder, ignore_errors=True)
            return 0
        scratch = stack.enter_context(scratch_database(ctx.settings, "compat", ctx.run))
        env = {**os.environ, **scratch.as_environment(), **SERVICE_SETTINGS}
        env.pop("PYTHONPATH", None)
        instances: list[Instance] = []
        stack.callback(_stop_all, instances)
        try:
            release.run(env, "init")
            # As in production: this one migrates nothing; the fresh one below migrates on startup, which has nothing
            # of its own to apply and must leave the newer schema as it is.
            running = Instance(release, {**env, "MIGRATE_ON_STARTUP": "false"}, folder / "running.log")
            instances.append(running)
            running.start()
            release.run({**env, "ADMIN_PASSWORD": FUZZ_ADMIN[2]}, "create-admin", *FUZZ_ADMIN[:2])
            fill(running.url)
            applied = _expand(ctx, scratch)
            print(f"Made and filled by its own code; this checkout's expand {listed(applied)} applied under it.")
            if not answers_200(f"{running.url}/health/ready"):
                raise IncompatibleError(f"its running instance is not ready any more: {running.last_words()}")
            restarted = Instance(release, {**env, "MIGRATE_ON_STARTUP": "true"}, folder / "restarted.log")
            instances.append(restarted)
            print(f"A fresh instance of it started on the new schema and was ready in {restarted.start():.1f} s.")
            journey(restarted.url)
            print("Sign-up, login, refresh, /me, a list page and a logout: each answered as its document says.")
            print(f"Schemathesis from its own document: {contract(restarted.url, folder)}.")
        except IncompatibleError as exc:
            expand = [revision for revision in new if revisions.phases[revision] == EXPAND]
            raise IncompatibleError(
                f"the previous release ({release.title[:60]}) fails on this checkout's expand {listed(expand)}: {exc} "
                f"(its logs: {folder})"
            ) from None
    shutil.rmtree(folder, ignore_errors=True)
    print(f"The previous release works on this checkout's expand revisions ({time.monotonic() - started:.1f} s).")
    return 0


def _stop_all(instances: list[Instance]) -> None:
    for instance in instances:
        instance.stop()


def _release_revisions(release: Release) -> set[str]:
    """The revision ids the release's files define."""
    return {script.revision for script in ScriptDirectory(str(release.root / "alembic")).walk_revisions()}


def _expand(ctx: CommandContext, scratch: Settings) -> list[str]:
    """Apply this checkout's expand revisions to the scratch database; which."""
    config = alembic_config(scratch, configure_logging=False)

    def upgrade(connection: sa.Connection) -> UpgradePlan:
        return apply_upgrade(connection, config, ctx.revisions, expand_only=True)

    return list(ctx.run(run_locked(scratch, "migrating", upgrade)).apply)


def cmd_check_compat(args: argparse.Namespace, ctx: CommandContext) -> int:
    return check_compat(ctx, args.ref)
