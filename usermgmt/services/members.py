"""Memberships: listing, changing roles, removing, leaving — always keeping an owner.

Every change locks the organization row first and re-checks the actor's
permission in the same transaction (never from the cache), then counts owners,
so two owners removing each other at once leave exactly one.
"""

from __future__ import annotations

import builtins
from dataclasses import replace
from uuid import UUID

from usermgmt.errors import LastOwner, NotFound, PermissionDenied
from usermgmt.models import (
    EffectivePermissions,
    Membership,
    MemberView,
    Page,
    RequestContext,
)
from usermgmt.permissions import OWNER
from usermgmt.ports import UnitOfWork
from usermgmt.schemas import MemberRolesIn, PageIn, parse
from usermgmt.services.authorization import AuthorizationService
from usermgmt.services.base import Kernel, decode_cursor, encode_cursor
from usermgmt.services.roles import check_grantable, resolve_roles


def require_in(
    authz: AuthorizationService, uow: UnitOfWork, actor_id: UUID, org_id: UUID, permission: str
) -> EffectivePermissions:
    """The actor's permissions read inside ``uow``; NotFound / PermissionDenied."""
    answer = authz.compute(uow, actor_id, org_id)
    if answer is None:
        raise NotFound("organization")
    if permission not in answer[0]:
        raise PermissionDenied(f"Missing permission {permission!r}.", permission=permission)
    return EffectivePermissions(org_id, actor_id, answer[0], answer[1])


def ensure_owner_remains(
    uow: UnitOfWork, org_id: UUID, membership: Membership, new_role_ids: frozenset[UUID]
) -> None:
    """LastOwner if taking the owner role from ``membership`` would leave no owner."""
    owner = uow.roles.get_by_name(org_id, OWNER)
    if owner is None or owner.id not in membership.role_ids or owner.id in new_role_ids:
        return
    if uow.memberships.count_with_role(org_id, owner.id) <= 1:
        raise LastOwner("An organization must keep at least one owner.")


class MembershipService:
    def __init__(self, kernel: Kernel, authz: AuthorizationService) -> None:
        self._k = kernel
        self._authz = authz

    def list(
        self,
        actor_id: UUID,
        organization_id: UUID,
        *,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[MemberView]:
        """Members with user and roles, ordered by membership id; requires ``member:read``."""
        page = parse(PageIn, limit=limit, cursor=cursor)
        after = decode_cursor(page.cursor)
        self._authz.require(actor_id, organization_id, "member:read")

        def body(uow: UnitOfWork) -> list[MemberView]:
            roles = {r.id: r for r in uow.roles.list(organization_id)}
            memberships = uow.memberships.list_for_organization(
                organization_id, limit=page.limit + 1, after=after
            )
            users = {u.id: u for u in uow.users.get_many(m.user_id for m in memberships)}
            return [
                MemberView(m, users[m.user_id], tuple(roles[r] for r in m.role_ids if r in roles))
                for m in memberships
                if m.user_id in users
            ]

        views = self._k.read(body)
        more = len(views) > page.limit
        views = views[: page.limit]
        return Page(views, encode_cursor(views[-1].membership.id) if more else None)

    def get(self, actor_id: UUID, organization_id: UUID, user_id: UUID) -> MemberView:
        """One member; requires ``member:read``."""
        self._authz.require(actor_id, organization_id, "member:read")
        return self._k.read(lambda uow: self._view(uow, organization_id, user_id))

    def update_roles(
        self,
        actor_id: UUID,
        organization_id: UUID,
        user_id: UUID,
        roles: builtins.list[str],
        ctx: RequestContext | None = None,
    ) -> MemberView:
        """Replace a member's roles (ids or names); requires ``member:update``.

        Raises LastOwner, PermissionDenied (granting beyond your own), ValidationError.
        """
        data = parse(MemberRolesIn, roles=roles)
        self._authz.require(actor_id, organization_id, "member:update", ctx)
        k = self._k

        def body(uow: UnitOfWork) -> MemberView:
            if uow.organizations.get(organization_id, for_update=True) is None:
                raise NotFound("organization")
            actor = require_in(self._authz, uow, actor_id, organization_id, "member:update")
            membership = uow.memberships.get(organization_id, user_id)
            if membership is None:
                raise NotFound("member")
            new_roles = resolve_roles(uow, organization_id, data.roles)
            new_ids = frozenset(r.id for r in new_roles)
            changed = new_ids ^ membership.role_ids
            check_grantable(self._authz, actor, uow.roles.get_many(organization_id, changed))
            ensure_owner_remains(uow, organization_id, membership, new_ids)
            if changed:
                uow.memberships.update(
                    replace(
                        membership,
                        role_ids=new_ids,
                        updated_at=k.now(),
                        version=membership.version + 1,
                    )
                )
                k.audit(
                    uow,
                    "member.roles_updated",
                    ctx,
                    actor=actor_id,
                    org=organization_id,
                    target_type="user",
                    target_id=user_id,
                    roles=sorted(r.name for r in new_roles),
                )
            return self._view(uow, organization_id, user_id)

        view = k.write(body)
        self._authz.invalidate(organization_id)
        return view

    def remove(
        self,
        actor_id: UUID,
        organization_id: UUID,
        user_id: UUID,
        ctx: RequestContext | None = None,
    ) -> None:
        """Remove a member; requires ``member:remove`` (and holding the member's permissions).

        Raises LastOwner, NotFound, PermissionDenied.
        """
        self._authz.require(actor_id, organization_id, "member:remove", ctx)
        self._delete(actor_id, organization_id, user_id, ctx, action="member.removed")

    def leave(
        self, user_id: UUID, organization_id: UUID, ctx: RequestContext | None = None
    ) -> None:
        """Leave an organization. Raises LastOwner, NotFound."""
        self._authz.require_member(user_id, organization_id)
        self._delete(None, organization_id, user_id, ctx, action="member.left")

    def _delete(
        self,
        actor_id: UUID | None,
        organization_id: UUID,
        user_id: UUID,
        ctx: RequestContext | None,
        *,
        action: str,
    ) -> None:
        k = self._k

        def body(uow: UnitOfWork) -> None:
            if uow.organizations.get(organization_id, for_update=True) is None:
                raise NotFound("organization")
            membership = uow.memberships.get(organization_id, user_id)
            if actor_id is not None:
                actor = require_in(self._authz, uow, actor_id, organization_id, "member:remove")
                if membership is None:
                    raise NotFound("member")
                if actor_id != user_id:
                    check_grantable(
                        self._authz, actor, uow.roles.get_many(organization_id, membership.role_ids)
                    )
            elif membership is None:
                raise NotFound("organization")
            ensure_owner_remains(uow, organization_id, membership, frozenset())
            uow.memberships.delete(organization_id, user_id)
            k.audit(
                uow,
                action,
                ctx,
                actor=actor_id or user_id,
                org=organization_id,
                target_type="user",
                target_id=user_id,
            )

        k.write(body)
        self._authz.invalidate(organization_id)

    def _view(self, uow: UnitOfWork, organization_id: UUID, user_id: UUID) -> MemberView:
        membership = uow.memberships.get(organization_id, user_id)
        user = uow.users.get(user_id)
        if membership is None or user is None:
            raise NotFound("member")
        roles = uow.roles.get_many(organization_id, membership.role_ids)
        return MemberView(membership, user, tuple(roles))
