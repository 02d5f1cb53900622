"""Response envelopes: lists (``{"items": [...], "next_cursor": ...}``) and the 202
answers that reveal nothing."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from usermgmt.models import Page

__all__ = [
    "REGISTERED",
    "RESET_REQUESTED",
    "VERIFICATION_SENT",
    "AcceptedOut",
    "ItemsOut",
    "items",
    "page",
]

T = TypeVar("T")
S = TypeVar("S")


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


#: ``POST /auth/register`` (with PREVENT_ENUMERATION, the default).
REGISTERED: Final = AcceptedOut(
    detail="Check your inbox: we sent this address an email with the next step."
)
#: ``POST /auth/password/forgot``.
RESET_REQUESTED: Final = AcceptedOut(
    detail="If an account uses this address, we sent it a link to reset the password."
)
#: ``POST /auth/verify-email/resend``.
VERIFICATION_SENT: Final = AcceptedOut(
    detail="If your address still needs verifying, we sent it a new link."
)
