"""FastAPI dependencies: the UserManagement, the caller, the request context, permissions.

Those that only read the request (:func:`get_um`, :func:`bearer_token`,
:func:`request_context`) are ``async def``: they run on the event loop, with no
threadpool round trip. Those that may do I/O (verifying a token can ask the revocation
store or the database, loading the user and checking a permission read the database)
run the sync core in the threadpool, once per request: :func:`current_user` is one
round trip, and so is a :func:`require_permission` dependency (authentication and the
permission check together); the caller it authenticated is remembered for the request,
so a route using both pays for one. With in-process backends (memory database, cache
and revocation store: :func:`reads_in_process`) there is no I/O to wait for, and they
call the core on the event loop instead.

:data:`current_user` and what :func:`require_permission` returns are security-scheme
objects (:class:`CurrentUserDependency`, :class:`PermissionDependency`: FastAPI
``SecurityBase`` subclasses declaring the ``bearer`` HTTP scheme, so the OpenAPI
document shows it on every route using them) whose one call takes only the request
and reads the UserManagement, the ``Authorization`` header and the ``org_id`` path
parameter itself: FastAPI resolves one node each, where a chain of small
sub-dependencies cost more per request than the work. Use them in the application's
own routes::

    @app.get("/orgs/{org_id}/projects")
    def projects(
        org_id: str,
        access: Annotated[Access, Depends(usermgmt_fastapi.require_permission("project:read"))],
    ):
        ...  # access.user is the caller, access.permissions what they hold there

A route that needs the caller and a permission uses the one dependency
:func:`require_permission` (its :class:`~usermgmt.Access` carries the user), not
``current_user`` beside it: both work, but FastAPI spends about as much per request on
each dependency it resolves as the check itself costs with in-process backends.

Authentication is a bearer access token (``Authorization: Bearer …``); failures are
core errors, which the installed error handlers render as 401/403/404 problems.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Annotated, Any, Final, TypeVar
from uuid import UUID

from fastapi import Depends, Request
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.base import SecurityBase

from usermgmt.app import UserManagement
from usermgmt.backends.memory import MemoryCache, MemoryRevocationStore, MemoryUnitOfWorkFactory
from usermgmt.errors import AuthenticationError, ConfigurationError
from usermgmt.http import bearer_token_from
from usermgmt.models import Access, AccessClaims, RequestContext, User
from usermgmt.observability.context import set_user_id
from usermgmt.permissions import validate_permission_name
from usermgmt.services.base import parse_uuid
from usermgmt_fastapi.errors import request_id_of
from usermgmt_fastapi.middleware import STATE_KEY, installed_um, request_id_from
from usermgmt_fastapi.threads import run_check

__all__ = [
    "ORG_ID_PARAM",
    "STATE_KEY",
    "UM",
    "BearerToken",
    "Claims",
    "Ctx",
    "CurrentUser",
    "CurrentUserDependency",
    "PermissionDependency",
    "bearer_token",
    "current_claims",
    "current_user",
    "get_um",
    "reads_in_process",
    "request_context",
    "require_permission",
]

T = TypeVar("T")

#: The path parameter naming the organization of :func:`require_permission`.
ORG_ID_PARAM: Final = "org_id"
_BEARER_DESCRIPTION: Final = "An access token from POST /auth/login or /auth/refresh."
_bearer = HTTPBearer(auto_error=False, scheme_name="bearer", description=_BEARER_DESCRIPTION)


def _um_of(request: Request) -> UserManagement:
    um = installed_um(request.scope)
    if um is None:
        raise ConfigurationError("call usermgmt_fastapi.mount(app, um) before serving requests")
    return um


async def get_um(request: Request) -> UserManagement:
    """The UserManagement given to :func:`usermgmt_fastapi.mount`.

    Raises ConfigurationError if the application was not set up with it.
    """
    return _um_of(request)


UM = Annotated[UserManagement, Depends(get_um)]


def _context_of(request: Request, um: UserManagement) -> RequestContext:
    headers = request.headers
    peer = request.client.host if request.client else None
    return RequestContext(
        ip=um.client_ip(peer, headers.get("x-forwarded-for")),
        user_agent=headers.get("user-agent"),
        request_id=request_id_of(request) or request_id_from(headers),
    )


async def request_context(request: Request, um: UM) -> RequestContext:
    """Where the request comes from, for audit events: the client address (believing
    ``X-Forwarded-For`` only from ``TRUSTED_PROXIES``), user agent and request id."""
    return _context_of(request, um)


Ctx = Annotated[RequestContext, Depends(request_context)]

_Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _token_of(credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None or not credentials.credentials:
        raise AuthenticationError("Authentication required: send a bearer access token.")
    return credentials.credentials


async def bearer_token(credentials: _Credentials) -> str:
    """The bearer token of the request. Raises AuthenticationError when there is none."""
    return _token_of(credentials)


BearerToken = Annotated[str, Depends(bearer_token)]


def reads_in_process(um: UserManagement) -> bool:
    """Whether authenticating a caller and checking a permission touch only in-process
    backends (memory database, no or in-process cache and revocation store): then they
    do no I/O, only a few dictionary look-ups under a lock held for microseconds, and
    the dependencies run them on the event loop instead of paying a threadpool round
    trip. Anything else (SQL, Redis) runs in the threadpool."""
    backends = um.backends
    return (
        type(backends.uow) is MemoryUnitOfWorkFactory
        and (backends.cache is None or type(backends.cache) is MemoryCache)
        and (backends.revocations is None or type(backends.revocations) is MemoryRevocationStore)
    )


async def _call(um: UserManagement, function: Callable[..., T], *args: Any) -> T:
    if reads_in_process(um):
        return function(*args)
    return await run_check(um.settings.http_check_threads, function, *args)


def _verify(um: UserManagement, token: str) -> AccessClaims:
    claims = um.auth.verify_access_token(token)
    set_user_id(claims.user_id)
    return claims


async def current_claims(token: BearerToken, um: UM) -> AccessClaims:
    """The verified claims of the access token (user id, session id).

    Raises InvalidToken, TokenExpired, TokenRevoked (401). The user id goes to the
    logging context of the request. The check (revocation: the store or the database)
    runs in the threadpool unless the backends are in process (:func:`reads_in_process`).
    """
    return await _call(um, _verify, um, token)


Claims = Annotated[AccessClaims, Depends(current_claims)]

#: Where the caller authenticated for this request is remembered (``request.state``),
#: with the application and the ``Authorization`` header it was authenticated for.
_CALLER_KEY: Final = "usermgmt_caller"
_CACHE_LIMIT: Final = 4096


def _authorization(request: Request) -> str | None:
    """The ``Authorization`` header (the first one), read from the raw ASGI headers."""
    for name, value in request.scope["headers"]:
        if name == b"authorization":
            text: str = value.decode("latin-1")
            return text
    return None


#: The bearer tokens of the ``Authorization`` headers seen recently: the same token
#: object for the same header, whose hash (for the verified-token cache) is then computed
#: once, not at every request. Only headers whose token was accepted are kept, and only
#: in the plain form ``Bearer <token>`` (:func:`_keep_token`): a client sending
#: arbitrary headers (garbage tokens, padding) makes nothing stay in memory.
_tokens: dict[str, str] = {}


def _token_of_header(authorization: str | None) -> str:
    """The bearer token of an ``Authorization`` header (the same parsing as FastAPI's
    HTTPBearer). Raises AuthenticationError when there is none."""
    if authorization is None:
        raise AuthenticationError("Authentication required: send a bearer access token.")
    token = _tokens.get(authorization)
    if token is None:
        token = bearer_token_from(authorization)
        if token is None:
            raise AuthenticationError("Authentication required: send a bearer access token.")
    return token


def _keep_token(authorization: str | None, token: str) -> None:
    """Remember the token of ``authorization`` once it was accepted (see ``_tokens``)."""
    if (
        authorization is not None
        and len(authorization) == len(token) + 7  # "Bearer " and the token, nothing else
        and authorization not in _tokens
    ):
        if len(_tokens) >= _CACHE_LIMIT:
            _tokens.clear()
        _tokens[authorization] = token


def _remembered(request: Request, authorization: str | None) -> User | None:
    """The caller a dependency of this request already authenticated for this header."""
    state = request.scope.get("state")
    entry = state.get(_CALLER_KEY) if state is not None else None
    if entry is not None and entry[0] is request.scope.get("app") and entry[1] == authorization:
        user: User = entry[2]
        return user
    return None


def _remember(request: Request, authorization: str | None, user: User) -> None:
    scope = request.scope
    scope.setdefault("state", {})[_CALLER_KEY] = (scope.get("app"), authorization, user)


#: Organization ids of the paths seen recently, as UUIDs (UUID(str) is slow per request).
_org_ids: dict[str, UUID] = {}


def _organization(org_id: str) -> UUID:
    """The organization id of the path; NotFound for a malformed one."""
    org = _org_ids.get(org_id)
    if org is None:
        org = parse_uuid(org_id, "organization")
        if len(_org_ids) >= _CACHE_LIMIT:
            _org_ids.clear()
        _org_ids[org_id] = org
    return org


def _authenticate(um: UserManagement, token: str) -> User:
    user = um.auth.authenticate(token)
    set_user_id(user.id)
    return user


class _BearerScheme(SecurityBase):
    """A dependency that is also the ``bearer`` HTTP security scheme of the OpenAPI
    document (FastAPI declares it on every route using it, as for HTTPBearer) and does
    its whole work in one call taking the request: FastAPI resolves one node with no
    sub-dependency, instead of a chain of small ones whose resolution costs more per
    request than the work itself."""

    def __init__(self) -> None:
        self.model = HTTPBearerModel(description=_BEARER_DESCRIPTION)
        self.scheme_name = _bearer.scheme_name


class CurrentUserDependency(_BearerScheme):
    """The class of :data:`current_user` (one instance is enough: use that)."""

    async def __call__(self, request: Request) -> User:
        """The active user the access token belongs to. Raises InvalidToken and
        subclasses (401).

        The user id goes to the logging context of the request. One threadpool round
        trip (token verification and the user's row; none with in-process backends, see
        :func:`reads_in_process`), none at all when a :func:`require_permission`
        dependency of the same request already authenticated this token.
        """
        authorization = _authorization(request)
        user = _remembered(request, authorization)
        if user is None:
            um = _um_of(request)
            token = _token_of_header(authorization)
            if reads_in_process(um):
                user = _authenticate(um, token)
            else:
                user = await run_check(um.settings.http_check_threads, _authenticate, um, token)
            _remember(request, authorization, user)
            _keep_token(authorization, token)
        return user

    def __repr__(self) -> str:
        return "usermgmt_fastapi.current_user"


#: The dependency giving the active user the bearer access token belongs to (401
#: otherwise): ``Depends(current_user)``; see :meth:`CurrentUserDependency.__call__`.
current_user: Final = CurrentUserDependency()

CurrentUser = Annotated[User, Depends(current_user)]


def _authorize(
    um: UserManagement,
    token: str,
    user: User | None,
    org_id: str,
    permission: str,
    request: Request,
) -> Access:
    """Authenticate (unless ``user`` is known already), then require ``permission``:
    the sync work of a :func:`require_permission` dependency, in one call."""
    if user is None:
        user = _authenticate(um, token)
    org = _organization(org_id)
    context = functools.partial(_context_of, request, um)  # built only for a refusal
    return Access.of(um.authz.require(user.id, org, permission, context), user)


class PermissionDependency(_BearerScheme):
    """What :func:`require_permission` returns: the dependency requiring
    ``permission`` in the organization of the path parameter ``org_id``."""

    def __init__(self, permission: str) -> None:
        super().__init__()
        validate_permission_name(permission)
        self.permission = permission
        self.usermgmt_permission = permission  # introspection (SEC-AC-01)
        self.__name__ = f"require_permission[{permission}]"

    async def __call__(self, request: Request) -> Access:
        """The caller and their effective permissions in the organization ``org_id``;
        see :func:`require_permission`."""
        path_params = request.scope.get("path_params")
        org_id = path_params.get(ORG_ID_PARAM) if path_params else None
        if not isinstance(org_id, str):
            raise ConfigurationError(
                f"require_permission needs the path parameter {{{ORG_ID_PARAM}}} on the route"
            )
        um = _um_of(request)
        authorization = _authorization(request)
        known = _remembered(request, authorization)
        token = "" if known is not None else _token_of_header(authorization)
        arguments = (um, token, known, org_id, self.permission, request)
        if reads_in_process(um):
            access = _authorize(*arguments)
        else:
            access = await run_check(um.settings.http_check_threads, _authorize, *arguments)
        if known is None:
            _remember(request, authorization, access.user)
            _keep_token(authorization, token)
        return access

    def __repr__(self) -> str:
        return f"usermgmt_fastapi.require_permission({self.permission!r})"


def require_permission(permission: str) -> PermissionDependency:
    """A dependency requiring ``permission`` in the organization named by the path
    parameter ``org_id``; it returns an :class:`~usermgmt.Access`: the caller
    (``access.user``) with their effective permissions and roles there. One
    dependency is then all a route needs (each dependency costs FastAPI about as
    much per request as the check itself)::

        Projects = Annotated[Access, Depends(require_permission("project:read"))]

        @app.get("/orgs/{org_id}/projects")
        def projects(org_id: str, access: Projects) -> dict[str, Any]:
            return {"requested_by": access.user.email}

    An outsider gets 404 (the organization's existence is not revealed), a member
    without the permission 403 (audited). Raises ValidationError at once for a name
    that is not ``resource:action``. Authentication (as :func:`current_user`) and the
    permission check run together in one threadpool round trip (none with in-process
    backends, see :func:`reads_in_process`). The dependency declares the ``bearer``
    security scheme, like :data:`current_user`.
    """
    return PermissionDependency(permission)
