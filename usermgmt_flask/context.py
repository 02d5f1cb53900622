"""Per-application and per-request state: the UserManagement of the current app, the
request id, the request context for audit events, and the caller.

:class:`usermgmt_flask.UserMgmt` keeps one :class:`UserMgmtState` per application in
``app.extensions["usermgmt"]`` (so one extension object may serve several apps, each
with its own UserManagement). Per-request values live in the WSGI environ, never in
``flask.g``: an app context pushed around several requests would share ``g``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from flask import current_app, request

from usermgmt import http
from usermgmt.app import UserManagement
from usermgmt.errors import AuthenticationError, ConfigurationError
from usermgmt.models import Access, AccessClaims, RequestContext, User
from usermgmt.observability.context import set_user_id

__all__ = [
    "BLUEPRINT_NAME",
    "EXTENSION_KEY",
    "UserMgmtState",
    "bearer_token",
    "current_claims",
    "current_permissions",
    "current_user",
    "get_state",
    "get_um",
    "remember_permissions",
    "request_context",
    "request_id",
]

#: ``app.extensions`` key of the extension's state.
EXTENSION_KEY: Final = "usermgmt"
#: Name of the blueprint holding every usermgmt route (endpoints ``usermgmt.<area>.<view>``).
BLUEPRINT_NAME: Final = "usermgmt"

_REQUEST_ID: Final = "usermgmt.request_id"
_USER: Final = "usermgmt.user"
_CLAIMS: Final = "usermgmt.claims"
_PERMISSIONS: Final = "usermgmt.permissions"


@dataclass(slots=True)
class UserMgmtState:
    """What :class:`~usermgmt_flask.UserMgmt` registers for one application.

    ``um`` may be replaced while the app runs (tests bind a fresh one per test).
    ``metrics`` False: no HTTP metrics are recorded (and no ``/metrics`` route exists).
    """

    um: UserManagement
    url_prefix: str
    max_body_bytes: int
    rate_limit_exempt: tuple[str, ...]
    metrics: bool = True


def get_state() -> UserMgmtState:
    """The extension state of the current app. Raises ConfigurationError without one."""
    state = current_app.extensions.get(EXTENSION_KEY)
    if not isinstance(state, UserMgmtState):
        raise ConfigurationError(
            "call UserMgmt(app, um) or UserMgmt().init_app(app, um) before serving requests"
        )
    return state


def get_um() -> UserManagement:
    """The UserManagement given to :class:`~usermgmt_flask.UserMgmt` for the current app.

    Raises ConfigurationError if the app was not set up with it.
    """
    return get_state().um


def request_id() -> str:
    """This request's id: the caller's ``X-Request-ID`` when sane, else a fresh one."""
    environ = request.environ
    value = environ.get(_REQUEST_ID)
    if not isinstance(value, str):
        value = http.request_id_from(request.headers.get(http.REQUEST_ID_HEADER))
        environ[_REQUEST_ID] = value
    return value


def request_context() -> RequestContext:
    """Where the request comes from, for audit events: the client address (believing
    ``X-Forwarded-For`` only from ``TRUSTED_PROXIES``), user agent and request id."""
    return RequestContext(
        ip=get_um().client_ip(request.remote_addr, request.headers.get("X-Forwarded-For")),
        user_agent=request.headers.get("User-Agent"),
        request_id=request_id(),
    )


def bearer_token() -> str:
    """The bearer token of the request. Raises AuthenticationError when there is none."""
    token = http.bearer_token_from(request.headers.get("Authorization"))
    if token is None:
        raise AuthenticationError("Authentication required: send a bearer access token.")
    return token


def _cached(key: str) -> Any:
    return request.environ.get(key)


def current_claims() -> AccessClaims:
    """The verified claims of the access token (user id, session id), once per request.

    Raises AuthenticationError (no token), InvalidToken, TokenExpired, TokenRevoked (401).
    The user id goes to the logging context of the request.
    """
    claims = _cached(_CLAIMS)
    if not isinstance(claims, AccessClaims):
        claims = get_um().auth.verify_access_token(bearer_token())
        request.environ[_CLAIMS] = claims
        set_user_id(claims.user_id)
    return claims


def current_user() -> User:
    """The active user the bearer access token belongs to, once per request.

    Raises AuthenticationError (no token), InvalidToken and subclasses (401).
    The user id goes to the logging context of the request.
    """
    user = _cached(_USER)
    if not isinstance(user, User):
        user = get_um().auth.authenticate(bearer_token())
        request.environ[_USER] = user
        set_user_id(user.id)
    return user


def current_permissions() -> Access:
    """The caller (``.user``) and their effective permissions in the organization
    checked by :func:`~usermgmt_flask.permission_required` for this request.

    Raises ConfigurationError outside a view guarded by it.
    """
    permissions = _cached(_PERMISSIONS)
    if not isinstance(permissions, Access):
        raise ConfigurationError("current_permissions() needs @permission_required on the view")
    return permissions


def remember_permissions(permissions: Access) -> None:
    """Keep the permissions :func:`~usermgmt_flask.permission_required` checked."""
    request.environ[_PERMISSIONS] = permissions
