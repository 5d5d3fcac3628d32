"""`just fuzz [SECONDS]`: Schemathesis against this checkout's service with a fresh seed, every phase, for a while.

The suite's contract test runs one fixed seed with few examples each, so it finds only what that seed finds. This
runs every phase (examples, coverage, fuzzing, stateful) with a new random seed until the time is spent, signed in as
an admin (again after any 401), on a scratch database the service migrates and seeds itself; Schemathesis prints
each failure with a curl command that reproduces it.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import tempfile
from contextlib import ExitStack
from pathlib import Path

from app.cli import schemathesis
from app.cli.compat import SERVICE_SETTINGS, Instance, this_checkout
from app.cli.context import CommandContext
from app.migrations.scratch import scratch_database

DEFAULT_SECONDS = 300


def fuzz(ctx: CommandContext, seconds: int, seed: int | None) -> int:
    """Run it; 0 when Schemathesis found nothing."""
    schemathesis.require_schemathesis()
    seed = secrets.randbelow(2**31) if seed is None else seed
    print(f"Seed {seed}: every phase for {seconds} s against this checkout's service on a scratch database.")
    folder = Path(tempfile.mkdtemp(prefix="fuzz-"))
    release = this_checkout()
    with ExitStack() as stack:
        scratch = stack.enter_context(scratch_database(ctx.settings, "fuzz", ctx.run))
        env = {**os.environ, **scratch.as_environment(), **SERVICE_SETTINGS}
        admin, email, password = schemathesis.FUZZ_ADMIN
        service = Instance(release, env, folder / "service.log")
        stack.callback(service.stop)
        service.start()  # it migrates and seeds the roles on startup, as `just serve` does
        release.run(env | {"ADMIN_PASSWORD": password}, "create-admin", admin, email)
        report = folder / "schemathesis.json"
        run = schemathesis.command(
            f"{service.url}/schema/openapi.json", report, seed=seed, phases=schemathesis.ALL_PHASES, max_time=seconds
        )
        # Its own output, as it goes: progress, then each failure with the curl command that reproduces it.
        subprocess.run(run, cwd=folder, env=schemathesis.environment(), check=False)
    if not report.exists():
        print(f"Seed {seed}: Schemathesis wrote no report (its output is above; the service's log: {folder}).")
        return 1
    result = schemathesis.Report.read(report)
    print(f"Seed {seed}: {result}.")
    if result.clean:
        shutil.rmtree(folder, ignore_errors=True)
        return 0
    print(f"Each failure above has its curl command; `just fuzz {seconds} --seed {seed}` runs this seed again.")
    print(f"The service's log and Schemathesis's report: {folder}")
    return 1


def _seconds(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"'{value}' is not a number of seconds: give 1 or more")
    return int(value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("seconds", nargs="?", type=_seconds, default=DEFAULT_SECONDS, help="how long (default 300)")
    parser.add_argument("--seed", type=int, help="a seed to run again (default: a fresh random one)")


def cmd_fuzz(args: argparse.Namespace, ctx: CommandContext) -> int:
    return fuzz(ctx, args.seconds, args.seed)
