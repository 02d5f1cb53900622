"""FastAPI dependencies: the UserManagement, the caller, the request context, permissions.

All are sync functions (FastAPI runs them in its threadpool; the core is sync). Use
them in the application's own routes::

    @app.get(
        "/orgs/{org_id}/projects",
        dependencies=[Depends(usermgmt_fastapi.require_permission("project:read"))],
    )
    def projects(org_id: str, user: Annotated[User, Depends(usermgmt_fastapi.current_user)]):
        ...

Authentication is a bearer access token (``Authorization: Bearer …``); failures are
core errors, which the installed error handlers render as 401/403/404 problems.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from usermgmt.app import UserManagement
from usermgmt.errors import AuthenticationError, ConfigurationError
from usermgmt.models import AccessClaims, EffectivePermissions, RequestContext, User
from usermgmt.observability.context import set_user_id
from usermgmt.permissions import validate_permission_name
from usermgmt.services.base import parse_uuid
from usermgmt_fastapi.errors import request_id_of
from usermgmt_fastapi.middleware import STATE_KEY, request_id_from

__all__ = [
    "STATE_KEY",
    "UM",
    "BearerToken",
    "Claims",
    "Ctx",
    "CurrentUser",
    "bearer_token",
    "current_claims",
    "current_user",
    "get_um",
    "request_context",
    "require_permission",
]

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="An access token from POST /auth/login or /auth/refresh.",
)


def get_um(request: Request) -> UserManagement:
    """The UserManagement given to :func:`usermgmt_fastapi.mount`.

    Raises ConfigurationError if the application was not set up with it.
    """
    um = getattr(request.app.state, STATE_KEY, None)
    if not isinstance(um, UserManagement):
        raise ConfigurationError("call usermgmt_fastapi.mount(app, um) before serving requests")
    return um


UM = Annotated[UserManagement, Depends(get_um)]


def request_context(request: Request, um: UM) -> RequestContext:
    """Where the request comes from, for audit events: the client address (believing
    ``X-Forwarded-For`` only from ``TRUSTED_PROXIES``), user agent and request id."""
    peer = request.client.host if request.client else None
    return RequestContext(
        ip=um.client_ip(peer, request.headers.get("x-forwarded-for")),
        user_agent=request.headers.get("user-agent"),
        request_id=request_id_of(request) or request_id_from(request.headers),
    )


Ctx = Annotated[RequestContext, Depends(request_context)]


def bearer_token(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The bearer token of the request. Raises AuthenticationError when there is none."""
    if credentials is None or not credentials.credentials:
        raise AuthenticationError("Authentication required: send a bearer access token.")
    return credentials.credentials


BearerToken = Annotated[str, Depends(bearer_token)]


def current_claims(token: BearerToken, um: UM) -> AccessClaims:
    """The verified claims of the access token (user id, session id).

    Raises InvalidToken, TokenExpired, TokenRevoked (401). The user id goes to the
    logging context of the request.
    """
    claims = um.auth.verify_access_token(token)
    set_user_id(claims.user_id)
    return claims


Claims = Annotated[AccessClaims, Depends(current_claims)]


def current_user(token: BearerToken, um: UM) -> User:
    """The active user the access token belongs to. Raises InvalidToken and subclasses (401).

    The user id goes to the logging context of the request.
    """
    user = um.auth.authenticate(token)
    set_user_id(user.id)
    return user


CurrentUser = Annotated[User, Depends(current_user)]


def require_permission(permission: str) -> Callable[..., EffectivePermissions]:
    """A dependency requiring ``permission`` in the organization named by the path
    parameter ``org_id``; it returns the caller's effective permissions there.

    An outsider gets 404 (the organization's existence is not revealed), a member
    without the permission 403 (audited). Raises ValidationError at once for a name
    that is not ``resource:action``.
    """
    validate_permission_name(permission)

    def dependency(
        org_id: Annotated[str, Path()],
        user: CurrentUser,
        um: UM,
        ctx: Ctx,
    ) -> EffectivePermissions:
        return um.authz.require(user.id, parse_uuid(org_id, "organization"), permission, ctx)

    dependency.__name__ = f"require_permission[{permission}]"
    dependency.__qualname__ = dependency.__name__
    marked: Any = dependency
    marked.usermgmt_permission = permission  # introspection (SEC-AC-01)
    return dependency
