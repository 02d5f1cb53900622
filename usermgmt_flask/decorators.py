"""Decorators guarding the application's own views with usermgmt's machinery.

::

    @app.get("/orgs/<org_id>/projects")
    @usermgmt_flask.permission_required("project:read")   # org id from the path's org_id
    def projects(org_id: str):
        user = usermgmt_flask.current_user()
        ...

    @app.get("/me/dashboard")
    @usermgmt_flask.login_required
    def dashboard(): ...

Put them below the route decorator. Failures are core errors, which the extension's
error handlers render as problem documents: no or a bad bearer token 401, an outsider
of the organization 404 (its existence is not revealed), a member without the
permission 403 (audited).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Final, ParamSpec, TypeVar
from uuid import UUID

from usermgmt.errors import ConfigurationError
from usermgmt.models import Access
from usermgmt.permissions import validate_permission_name
from usermgmt.services.base import parse_uuid
from usermgmt_flask.context import current_user, get_um, remember_permissions, request_context

__all__ = ["ORG_ID_ARG", "login_required", "permission_required"]

P = ParamSpec("P")
R = TypeVar("R")

#: The view argument (the rule's path parameter) naming the organization.
ORG_ID_ARG: Final = "org_id"


def login_required(view: Callable[P, R]) -> Callable[P, R]:
    """Only callers with a valid bearer access token of an active user reach ``view``;
    :func:`usermgmt_flask.current_user` then returns them.

    The view answers 401 (``WWW-Authenticate: Bearer``) otherwise.
    """

    @functools.wraps(view)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        current_user()
        return view(*args, **kwargs)

    return guarded


def permission_required(
    permission: str, *, org_id_arg: str = ORG_ID_ARG
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Only callers holding ``permission`` in the organization named by the path
    parameter ``org_id`` (or ``org_id_arg``) reach the view;
    :func:`usermgmt_flask.current_permissions` then returns an :class:`~usermgmt.Access`
    (the caller with their effective permissions there), :func:`usermgmt_flask.current_user`
    the caller.

    The view answers 401 without a valid token, 404 to an outsider (and for a malformed
    id), 403 to a member without the permission. Raises ValidationError at once for a
    name that is not ``resource:action``.
    """
    validate_permission_name(permission)

    def decorate(view: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(view)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            org_id = kwargs.get(org_id_arg)
            if not isinstance(org_id, str | UUID):
                raise ConfigurationError(
                    f"@permission_required needs the path parameter <{org_id_arg}> on the route"
                )
            user = current_user()
            um = get_um()
            org = parse_uuid(org_id, "organization")
            # the request context is built only for a refusal (require() audits it)
            effective = um.authz.require(user.id, org, permission, request_context)
            remember_permissions(Access.of(effective, user))
            return view(*args, **kwargs)

        marked: Any = guarded
        marked.usermgmt_permission = permission  # introspection (SEC-AC-01)
        return guarded

    return decorate
