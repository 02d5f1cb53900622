"""What every router shares: response envelopes, OpenAPI declarations, no-store."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Final, Generic, TypeVar

from fastapi import Response
from pydantic import BaseModel, ConfigDict

from usermgmt.models import Page
from usermgmt.schemas import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from usermgmt_fastapi.errors import PROBLEM_MEDIA_TYPE, Problem

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

T = TypeVar("T")
S = TypeVar("S")

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


class ItemsOut(BaseModel, Generic[T]):
    """A list: one page of a cursor-paginated collection (``next_cursor`` null at the end)."""

    model_config = ConfigDict(frozen=True)

    items: list[T]
    next_cursor: str | None = None


class AcceptedOut(BaseModel):
    """202: the request is taken; its outcome is not revealed (no account enumeration)."""

    model_config = ConfigDict(frozen=True)

    status: str = "accepted"
    detail: str


def page(result: Page[S], convert: Callable[[S], T]) -> ItemsOut[T]:
    """A core page as the HTTP envelope."""
    return ItemsOut(items=[convert(x) for x in result.items], next_cursor=result.next_cursor)


def items(values: Iterable[T]) -> ItemsOut[T]:
    """An unpaginated list in the same envelope (``next_cursor`` always null)."""
    return ItemsOut(items=list(values), next_cursor=None)


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


def no_store(response: Response) -> None:
    """Router dependency: nothing usermgmt answers may be cached (tokens, personal data)."""
    response.headers["Cache-Control"] = "no-store"
