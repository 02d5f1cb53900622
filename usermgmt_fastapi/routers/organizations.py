"""``/organizations``: organizations, members, roles, the caller's permissions; and the
permission catalogue ``/permissions``.

The core checks every permission (404 for outsiders, 403 for members without it);
``x-usermgmt-access`` in the OpenAPI document names the permission of each operation.
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Response

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
from usermgmt_fastapi.dependencies import UM, Ctx, CurrentUser, current_user
from usermgmt_fastapi.routers._common import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    ItemsOut,
    access,
    items,
    no_store,
    page,
    problems,
)

__all__ = ["organizations_router", "permissions_router"]

Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="Page size")]
Cursor = Annotated[str | None, Query(max_length=200, description="From the previous page")]


def organizations_router() -> APIRouter:
    """The ``/organizations`` routes for organizations, members and roles (a new router
    on each call); invitations and audit logs have their own routers."""
    router = APIRouter(
        prefix="/organizations",
        tags=["organizations"],
        dependencies=[Depends(no_store)],
        responses=problems(401, 422, 429, 503),
    )

    # --- organizations ---------------------------------------------------------------------

    @router.post(
        "",
        status_code=201,
        response_model=OrganizationOut,
        summary="Create an organization (you become its owner)",
        responses=problems(400, 409, 413, 422),
        openapi_extra=access("user"),
    )
    def create_organization(
        data: OrganizationCreateIn, user: CurrentUser, um: UM, ctx: Ctx
    ) -> OrganizationOut:
        org = um.organizations.create(
            user.id, data.name, slug=data.slug, metadata=data.metadata, ctx=ctx
        )
        return OrganizationOut.of(org)

    @router.get(
        "/{org_id}",
        response_model=OrganizationOut,
        summary="One organization",
        responses=problems(403, 404),
        openapi_extra=access("organization:read"),
    )
    def get_organization(org_id: str, user: CurrentUser, um: UM) -> OrganizationOut:
        return OrganizationOut.of(um.organizations.get(user.id, _org(org_id)))

    @router.patch(
        "/{org_id}",
        response_model=OrganizationOut,
        summary="Change an organization's name, slug or metadata",
        responses=problems(400, 403, 404, 409, 413, 422),
        openapi_extra=access("organization:update"),
    )
    def update_organization(
        org_id: str, data: OrganizationUpdateIn, user: CurrentUser, um: UM, ctx: Ctx
    ) -> OrganizationOut:
        org = um.organizations.update(
            user.id, _org(org_id), data.model_dump(exclude_unset=True), ctx=ctx
        )
        return OrganizationOut.of(org)

    @router.delete(
        "/{org_id}",
        status_code=204,
        response_class=Response,
        summary="Delete an organization with its roles, memberships and invitations",
        responses=problems(403, 404),
        openapi_extra=access("organization:delete"),
    )
    def delete_organization(org_id: str, user: CurrentUser, um: UM, ctx: Ctx) -> None:
        um.organizations.delete(user.id, _org(org_id), ctx=ctx)

    # --- members ---------------------------------------------------------------------------

    @router.get(
        "/{org_id}/members",
        response_model=ItemsOut[MemberOut],
        summary="Members with their roles",
        responses=problems(403, 404, 422),
        openapi_extra=access("member:read"),
    )
    def list_members(
        org_id: str,
        user: CurrentUser,
        um: UM,
        limit: Limit = DEFAULT_PAGE_SIZE,
        cursor: Cursor = None,
    ) -> ItemsOut[MemberOut]:
        result = um.members.list(user.id, _org(org_id), limit=limit, cursor=cursor)
        return page(result, MemberOut.of)

    @router.get(
        "/{org_id}/members/{user_id}",
        response_model=MemberOut,
        summary="One member",
        responses=problems(403, 404),
        openapi_extra=access("member:read"),
    )
    def get_member(org_id: str, user_id: str, user: CurrentUser, um: UM) -> MemberOut:
        return MemberOut.of(um.members.get(user.id, _org(org_id), parse_uuid(user_id, "member")))

    @router.patch(
        "/{org_id}/members/{user_id}",
        response_model=MemberOut,
        summary="Replace a member's roles (409 if no owner would remain)",
        responses=problems(400, 403, 404, 409, 413, 422),
        openapi_extra=access("member:update"),
    )
    def update_member(
        org_id: str, user_id: str, data: MemberRolesIn, user: CurrentUser, um: UM, ctx: Ctx
    ) -> MemberOut:
        view = um.members.update_roles(
            user.id, _org(org_id), parse_uuid(user_id, "member"), list(data.roles), ctx=ctx
        )
        return MemberOut.of(view)

    @router.delete(
        "/{org_id}/members/{user_id}",
        status_code=204,
        response_class=Response,
        summary="Remove a member (409 if no owner would remain)",
        responses=problems(403, 404, 409),
        openapi_extra=access("member:remove"),
    )
    def remove_member(org_id: str, user_id: str, user: CurrentUser, um: UM, ctx: Ctx) -> None:
        um.members.remove(user.id, _org(org_id), parse_uuid(user_id, "member"), ctx=ctx)

    @router.post(
        "/{org_id}/leave",
        status_code=204,
        response_class=Response,
        summary="Leave the organization (409 if you are its last owner)",
        responses=problems(404, 409),
        openapi_extra=access("member"),
    )
    def leave_organization(org_id: str, user: CurrentUser, um: UM, ctx: Ctx) -> None:
        um.members.leave(user.id, _org(org_id), ctx=ctx)

    @router.get(
        "/{org_id}/permissions/me",
        response_model=EffectivePermissionsOut,
        summary="Your effective permissions and roles in the organization",
        responses=problems(404),
        openapi_extra=access("member"),
    )
    def my_permissions(org_id: str, user: CurrentUser, um: UM) -> EffectivePermissionsOut:
        return EffectivePermissionsOut.of(um.organizations.my_permissions(user.id, _org(org_id)))

    # --- roles -----------------------------------------------------------------------------

    @router.get(
        "/{org_id}/roles",
        response_model=ItemsOut[RoleOut],
        summary="The organization's roles (system and custom)",
        responses=problems(403, 404),
        openapi_extra=access("role:read"),
    )
    def list_roles(org_id: str, user: CurrentUser, um: UM) -> ItemsOut[RoleOut]:
        return items(RoleOut.of(r) for r in um.roles.list(user.id, _org(org_id)))

    @router.post(
        "/{org_id}/roles",
        status_code=201,
        response_model=RoleOut,
        summary="Create a custom role (only with permissions you hold)",
        responses=problems(400, 403, 404, 409, 413, 422),
        openapi_extra=access("role:manage"),
    )
    def create_role(
        org_id: str, data: RoleCreateIn, user: CurrentUser, um: UM, ctx: Ctx
    ) -> RoleOut:
        role = um.roles.create(
            user.id,
            _org(org_id),
            data.name,
            permissions=list(data.permissions),
            description=data.description,
            ctx=ctx,
        )
        return RoleOut.of(role)

    @router.get(
        "/{org_id}/roles/{role_id}",
        response_model=RoleOut,
        summary="One role",
        responses=problems(403, 404),
        openapi_extra=access("role:read"),
    )
    def get_role(org_id: str, role_id: str, user: CurrentUser, um: UM) -> RoleOut:
        return RoleOut.of(um.roles.get(user.id, _org(org_id), parse_uuid(role_id, "role")))

    @router.patch(
        "/{org_id}/roles/{role_id}",
        response_model=RoleOut,
        summary="Change a custom role (system roles: 409 system_role)",
        responses=problems(400, 403, 404, 409, 413, 422),
        openapi_extra=access("role:manage"),
    )
    def update_role(
        org_id: str, role_id: str, data: RoleUpdateIn, user: CurrentUser, um: UM, ctx: Ctx
    ) -> RoleOut:
        role = um.roles.update(
            user.id,
            _org(org_id),
            parse_uuid(role_id, "role"),
            name=data.name,
            description=data.description,
            permissions=None if data.permissions is None else list(data.permissions),
            ctx=ctx,
        )
        return RoleOut.of(role)

    @router.delete(
        "/{org_id}/roles/{role_id}",
        status_code=204,
        response_class=Response,
        summary="Delete a custom role nobody holds (409 system_role / role_in_use)",
        responses=problems(403, 404, 409),
        openapi_extra=access("role:manage"),
    )
    def delete_role(org_id: str, role_id: str, user: CurrentUser, um: UM, ctx: Ctx) -> None:
        um.roles.delete(user.id, _org(org_id), parse_uuid(role_id, "role"), ctx=ctx)

    return router


def permissions_router() -> APIRouter:
    """``GET /permissions``: the permission catalogue (a new router on each call)."""
    router = APIRouter(
        prefix="/permissions",
        tags=["organizations"],
        dependencies=[Depends(no_store)],
        responses=problems(401, 422, 429, 503),
    )

    @router.get(
        "",
        response_model=ItemsOut[PermissionOut],
        summary="Every permission roles can grant",
        dependencies=[Depends(current_user)],
        openapi_extra=access("user"),
    )
    def list_permissions(um: UM) -> ItemsOut[PermissionOut]:
        return items(PermissionOut.of(p) for p in um.roles.catalogue())

    return router


def _org(org_id: str) -> UUID:
    """The organization id of the path; a malformed one is simply not found (404)."""
    return parse_uuid(org_id, "organization")
