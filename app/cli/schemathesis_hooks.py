"""Schemathesis's hooks for this API: its cases never deactivate or demote the admin it signs in as.

Schemathesis learns user ids from responses and grants `admin` to other users; with another admin present, the
service rightly lets the fuzzed admin be deactivated or demoted, and every later case would then test only a 401 or
a 403. A case aimed at the fuzzed admin's own account goes to the next account instead.
"""

from __future__ import annotations

from typing import Any

import schemathesis

# The account Schemathesis signs in as is the first of an empty database (app.cli.schemathesis.FUZZ_ADMIN).
FUZZ_ADMIN_ID = 1
ACCOUNT_CHANGES = {("PATCH", "/api/v1/users/{user_id}"), ("DELETE", "/api/v1/users/{user_id}/roles/{role}")}


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    """Point a deactivation or a demotion of the fuzzed admin at the next account."""
    if (case.method.upper(), case.path) in ACCOUNT_CHANGES and case.path_parameters.get("user_id") == FUZZ_ADMIN_ID:
        case.path_parameters["user_id"] = FUZZ_ADMIN_ID + 1
