"""Who a log record is about: the request id and the user id of the current request.

The web adapters bind them (:func:`bind_request` when a request starts, :func:`set_user_id`
once the bearer token is verified, :func:`unbind_request` when it ends);
:mod:`usermgmt.observability.logging` puts them on every record. Applications with their
own framework integration call the same three functions.

A bound request is one mutable :class:`RequestLogContext` in one context variable (one
``set`` and one ``reset`` per request), because a value set in one thread of the
request (FastAPI runs sync dependencies in a thread pool, each in its own copy of the
context) must be seen by the rest of it: the user resolved by a dependency names the
caller in the access log written by the middleware. ``request_id_var`` and
``user_id_var`` are plain :class:`contextvars.ContextVar` holding the values *outside*
a bound request (code without a request, e.g. a worker, may set them directly); inside
one, the request's values win (read them with :func:`current_request_id` and
:func:`current_user_id`).
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

#: A request id for code running outside a bound request (None unless set directly).
request_id_var: ContextVar[str | None] = ContextVar("usermgmt_request_id", default=None)
#: The caller's id outside a bound request (:func:`set_user_id` without a request).
user_id_var: ContextVar[str | None] = ContextVar("usermgmt_user_id", default=None)


@dataclass(slots=True)
class RequestLogContext:
    """The per-request values, shared by every context copy of one request."""

    request_id: str | None = None
    user_id: str | None = None


_request_var: ContextVar[RequestLogContext | None] = ContextVar(
    "usermgmt_request_log_context", default=None
)

_new = object.__new__


def bind_request(request_id: str | None) -> Token[RequestLogContext | None]:
    """Start a request: its id is set and the user id cleared. Returns what
    :func:`unbind_request` needs to restore the previous values."""
    # What RequestLogContext(request_id) makes, without the call of its __init__ (this
    # runs for every request).
    context: RequestLogContext = _new(RequestLogContext)
    context.request_id = request_id
    context.user_id = None
    return _request_var.set(context)


def unbind_request(tokens: Token[RequestLogContext | None]) -> None:
    """End the request bound by :func:`bind_request` (in the same context)."""
    _request_var.reset(tokens)


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
    shared = _request_var.get()
    if shared is not None:
        shared.user_id = value
    else:  # no request bound: the context's own value
        user_id_var.set(value)


def current_request_id() -> str | None:
    """The request id of the current request, if any."""
    shared = _request_var.get()
    return request_id_var.get() if shared is None else shared.request_id


def current_user_id() -> str | None:
    """The user id of the current request's caller, if known."""
    shared = _request_var.get()
    return user_id_var.get() if shared is None else shared.user_id
