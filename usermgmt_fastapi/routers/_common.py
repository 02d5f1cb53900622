"""What every router shares: response envelopes (from :mod:`usermgmt.http`, the
adapter-neutral contract), OpenAPI declarations, no-store."""

from __future__ import annotations

from typing import Any, Final

from fastapi import Response

from usermgmt.http import PROBLEM_MEDIA_TYPE, AcceptedOut, ItemsOut, Problem, items, page
from usermgmt.schemas import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE

__all__ = [
    "ACCESS_KEY",
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "AcceptedOut",
    "ItemsOut",
    "access",
    "items",
    "no_store",
    "page",
    "problems",
]

#: OpenAPI extension naming who may call an operation (SEC-AC-01): ``anyone``,
#: ``user`` (any signed-in user), ``member`` (of the path's organization),
#: ``superuser``, or the permission checked in the path's organization.
ACCESS_KEY: Final = "x-usermgmt-access"

_DESCRIPTIONS: Final = {
    400: "Bad request (wrong current password, invalid or used single-use token, bad headers)",
    401: "Missing, invalid, expired or revoked credentials (`WWW-Authenticate: Bearer`)",
    403: "Signed in but not allowed (missing permission, email not verified, superuser only)",
    404: "Not found, or not visible to the caller (an organization they are not a member of)",
    409: "Conflicts with the current state (taken, last owner, system role, role in use)",
    413: "Request body too large",
    422: "Invalid input: malformed JSON, wrong types, unknown fields, rule violations",
    429: "Too many requests (`Retry-After`, `RateLimit-*`)",
    503: "A backend is unavailable",
}
_PROBLEM_SCHEMA: Final = Problem.model_json_schema()


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses, as problem documents."""
    return {
        status: {
            "description": _DESCRIPTIONS.get(status, "Error"),
            "content": {PROBLEM_MEDIA_TYPE: {"schema": _PROBLEM_SCHEMA}},
        }
        for status in statuses
    }


def access(who: str) -> dict[str, Any]:
    """``openapi_extra`` declaring who may call the operation (see ACCESS_KEY)."""
    return {ACCESS_KEY: who}


async def no_store(response: Response) -> None:
    """Router dependency: nothing usermgmt answers may be cached (tokens, personal data).

    ``async``: it only sets a header, so it runs on the event loop (no threadpool trip)."""
    response.headers["Cache-Control"] = "no-store"
