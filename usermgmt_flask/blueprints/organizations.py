"""``/organizations``: organizations, members, roles, the caller's permissions; and the
permission catalogue ``/permissions``.

The core checks every permission (404 for outsiders, 403 for members without it).
"""

from __future__ import annotations

from uuid import UUID

from flask import Blueprint, Response

from usermgmt.http import PageQuery, items, page
from usermgmt.schemas import (
    EffectivePermissionsOut,
    MemberOut,
    MemberRolesIn,
    OrganizationCreateIn,
    OrganizationOut,
    OrganizationUpdateIn,
    PermissionOut,
    RoleCreateIn,
    RoleOut,
    RoleUpdateIn,
)
from usermgmt.services.base import parse_uuid
from usermgmt_flask.blueprints._common import json_body, no_content, ok, parse, query, route
from usermgmt_flask.context import current_user, get_um, request_context

__all__ = ["organizations_blueprint", "permissions_blueprint"]


def _org(org_id: str) -> UUID:
    """The organization id of the path; a malformed one is simply not found (404)."""
    return parse_uuid(org_id, "organization")


def organizations_blueprint() -> Blueprint:
    """The ``/organizations`` routes (a new blueprint on each call)."""
    bp = Blueprint("organizations", __name__)

    # --- organizations ---------------------------------------------------------------------

    @route(bp, "POST", "/organizations")
    def create_organization() -> Response:
        body = json_body()
        user = current_user()
        data = parse(OrganizationCreateIn, body)
        org = get_um().organizations.create(
            user.id, data.name, slug=data.slug, metadata=data.metadata, ctx=request_context()
        )
        return ok(OrganizationOut.of(org), 201)

    @route(bp, "GET", "/organizations/<org_id>")
    def get_organization(org_id: str) -> Response:
        user = current_user()
        return ok(OrganizationOut.of(get_um().organizations.get(user.id, _org(org_id))))

    @route(bp, "PATCH", "/organizations/<org_id>")
    def update_organization(org_id: str) -> Response:
        body = json_body()
        user = current_user()
        data = parse(OrganizationUpdateIn, body)
        org = get_um().organizations.update(
            user.id, _org(org_id), data.model_dump(exclude_unset=True), ctx=request_context()
        )
        return ok(OrganizationOut.of(org))

    @route(bp, "DELETE", "/organizations/<org_id>")
    def delete_organization(org_id: str) -> Response:
        user = current_user()
        get_um().organizations.delete(user.id, _org(org_id), ctx=request_context())
        return no_content()

    # --- members ---------------------------------------------------------------------------

    @route(bp, "GET", "/organizations/<org_id>/members")
    def list_members(org_id: str) -> Response:
        user = current_user()
        params = query(PageQuery)
        result = get_um().members.list(
            user.id, _org(org_id), limit=params.limit, cursor=params.cursor
        )
        return ok(page(result, MemberOut.of))

    @route(bp, "GET", "/organizations/<org_id>/members/<user_id>")
    def get_member(org_id: str, user_id: str) -> Response:
        user = current_user()
        view = get_um().members.get(user.id, _org(org_id), parse_uuid(user_id, "member"))
        return ok(MemberOut.of(view))

    @route(bp, "PATCH", "/organizations/<org_id>/members/<user_id>")
    def update_member(org_id: str, user_id: str) -> Response:
        body = json_body()
        user = current_user()
        data = parse(MemberRolesIn, body)
        view = get_um().members.update_roles(
            user.id,
            _org(org_id),
            parse_uuid(user_id, "member"),
            list(data.roles),
            ctx=request_context(),
        )
        return ok(MemberOut.of(view))

    @route(bp, "DELETE", "/organizations/<org_id>/members/<user_id>")
    def remove_member(org_id: str, user_id: str) -> Response:
        user = current_user()
        get_um().members.remove(
            user.id, _org(org_id), parse_uuid(user_id, "member"), ctx=request_context()
        )
        return no_content()

    @route(bp, "POST", "/organizations/<org_id>/leave")
    def leave_organization(org_id: str) -> Response:
        user = current_user()
        get_um().members.leave(user.id, _org(org_id), ctx=request_context())
        return no_content()

    @route(bp, "GET", "/organizations/<org_id>/permissions/me")
    def my_permissions(org_id: str) -> Response:
        user = current_user()
        eff = get_um().organizations.my_permissions(user.id, _org(org_id))
        return ok(EffectivePermissionsOut.of(eff))

    # --- roles -----------------------------------------------------------------------------

    @route(bp, "GET", "/organizations/<org_id>/roles")
    def list_roles(org_id: str) -> Response:
        user = current_user()
        return ok(items(RoleOut.of(r) for r in get_um().roles.list(user.id, _org(org_id))))

    @route(bp, "POST", "/organizations/<org_id>/roles")
    def create_role(org_id: str) -> Response:
        body = json_body()
        user = current_user()
        data = parse(RoleCreateIn, body)
        role = get_um().roles.create(
            user.id,
            _org(org_id),
            data.name,
            permissions=list(data.permissions),
            description=data.description,
            ctx=request_context(),
        )
        return ok(RoleOut.of(role), 201)

    @route(bp, "GET", "/organizations/<org_id>/roles/<role_id>")
    def get_role(org_id: str, role_id: str) -> Response:
        user = current_user()
        role = get_um().roles.get(user.id, _org(org_id), parse_uuid(role_id, "role"))
        return ok(RoleOut.of(role))

    @route(bp, "PATCH", "/organizations/<org_id>/roles/<role_id>")
    def update_role(org_id: str, role_id: str) -> Response:
        body = json_body()
        user = current_user()
        data = parse(RoleUpdateIn, body)
        role = get_um().roles.update(
            user.id,
            _org(org_id),
            parse_uuid(role_id, "role"),
            name=data.name,
            description=data.description,
            permissions=None if data.permissions is None else list(data.permissions),
            ctx=request_context(),
        )
        return ok(RoleOut.of(role))

    @route(bp, "DELETE", "/organizations/<org_id>/roles/<role_id>")
    def delete_role(org_id: str, role_id: str) -> Response:
        user = current_user()
        get_um().roles.delete(
            user.id, _org(org_id), parse_uuid(role_id, "role"), ctx=request_context()
        )
        return no_content()

    return bp


def permissions_blueprint() -> Blueprint:
    """``GET /permissions``: the permission catalogue (a new blueprint on each call)."""
    bp = Blueprint("permissions", __name__)

    @route(bp, "GET", "/permissions")
    def list_permissions() -> Response:
        current_user()  # any signed-in user
        return ok(items(PermissionOut.of(p) for p in get_um().roles.catalogue()))

    return bp
