"""Who a log record is about: the request id and the user id of the current request.

The web adapters bind them (:func:`bind_request` when a request starts, :func:`set_user_id`
once the bearer token is verified, :func:`unbind_request` when it ends);
:mod:`usermgmt.observability.logging` puts them on every record. Applications with their
own framework integration call the same three functions.

``request_id_var`` and ``user_id_var`` are plain :class:`contextvars.ContextVar`. A
request also carries one mutable :class:`RequestLogContext`, because a value set in
one thread of the request (FastAPI runs sync dependencies in a thread pool, each in
its own copy of the context) must be seen by the rest of it: the user resolved by a
dependency names the caller in the access log written by the middleware.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Final
from uuid import UUID

__all__ = [
    "RequestLogContext",
    "bind_request",
    "current_request_id",
    "current_user_id",
    "request_id_var",
    "set_user_id",
    "unbind_request",
    "user_id_var",
]

#: The id of the request being served (``X-Request-ID``), None outside a request.
request_id_var: ContextVar[str | None] = ContextVar("usermgmt_request_id", default=None)
#: The id of the authenticated caller, None before (or without) authentication.
user_id_var: ContextVar[str | None] = ContextVar("usermgmt_user_id", default=None)


@dataclass(slots=True)
class RequestLogContext:
    """The per-request values, shared by every context copy of one request."""

    request_id: str | None = None
    user_id: str | None = None


_request_var: ContextVar[RequestLogContext | None] = ContextVar(
    "usermgmt_request_log_context", default=None
)

_Tokens = tuple[Token[str | None], Token[str | None] | None, Token[RequestLogContext | None]]


def bind_request(request_id: str | None) -> _Tokens:
    """Start a request: its id is set and the user id cleared. Returns what
    :func:`unbind_request` needs to restore the previous values."""
    return (
        request_id_var.set(request_id),
        # cleared only when set (the usual context has none): one set and reset less
        None if user_id_var.get() is None else user_id_var.set(None),
        _request_var.set(RequestLogContext(request_id)),
    )


def unbind_request(tokens: _Tokens) -> None:
    """End the request bound by :func:`bind_request` (in the same context)."""
    rid, uid, shared = tokens
    _request_var.reset(shared)
    if uid is not None:
        user_id_var.reset(uid)
    elif user_id_var.get() is not None:  # set during the request: None again, as before
        user_id_var.set(None)
    request_id_var.reset(rid)


#: UUIDs as text, for the callers seen recently (str(UUID) is slow for every request).
_texts: dict[UUID, str] = {}
_TEXTS_LIMIT: Final = 4096


def _text(user_id: object) -> str:
    if type(user_id) is not UUID:
        return str(user_id)
    text = _texts.get(user_id)
    if text is None:
        text = str(user_id)
        if len(_texts) >= _TEXTS_LIMIT:
            _texts.clear()
        _texts[user_id] = text
    return text


def set_user_id(user_id: object | None) -> None:
    """The caller of the current request is ``user_id`` (a UUID or a string)."""
    value = None if user_id is None else _text(user_id)
    user_id_var.set(value)
    shared = _request_var.get()
    if shared is not None:
        shared.user_id = value


def current_request_id() -> str | None:
    """The request id of the current request, if any."""
    value = request_id_var.get()
    if value is None:
        shared = _request_var.get()
        value = shared.request_id if shared is not None else None
    return value


def current_user_id() -> str | None:
    """The user id of the current request's caller, if known."""
    value = user_id_var.get()
    if value is None:
        shared = _request_var.get()
        value = shared.user_id if shared is not None else None
    return value
