"""Organizations: creation with system roles, reading, updating, deleting, listing."""

from __future__ import annotations

import re
import secrets
import unicodedata
from collections.abc import Mapping
from dataclasses import replace
from functools import partial
from typing import Any
from uuid import UUID

from usermgmt.errors import NotFound, SlugTaken
from usermgmt.ids import new_id
from usermgmt.models import (
    EffectivePermissions,
    Membership,
    Organization,
    RequestContext,
    Role,
    UserOrganization,
)
from usermgmt.permissions import MEMBER, OWNER, SYSTEM_ROLES
from usermgmt.ports import UnitOfWork
from usermgmt.schemas import OrganizationCreateIn, OrganizationUpdateIn, parse
from usermgmt.services.authorization import AuthorizationService
from usermgmt.services.base import Kernel, merge_changes

_SLUG_ATTEMPTS = 5


def slugify(name: str) -> str:
    """A URL slug from a display name (ASCII, lowercase, hyphens); never empty."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:48].strip("-")
    return slug or "org"


def create_system_roles(kernel: Kernel, uow: UnitOfWork, org_id: UUID) -> dict[str, Role]:
    """Insert the owner/admin/member roles of an organization; returns them by name."""
    now = kernel.now()
    roles: dict[str, Role] = {}
    for name, description in SYSTEM_ROLES.items():
        role = Role(
            id=new_id(),
            organization_id=org_id,
            name=name,
            description=description,
            permissions=kernel.registry.system_role_permissions(name),
            is_system=True,
            created_at=now,
            updated_at=now,
        )
        uow.roles.add(role)
        roles[name] = role
    return roles


class OrganizationService:
    def __init__(self, kernel: Kernel, authz: AuthorizationService) -> None:
        self._k = kernel
        self._authz = authz

    def create(
        self,
        actor_id: UUID,
        name: str,
        slug: str | None = None,
        metadata: dict[str, Any] | None = None,
        ctx: RequestContext | None = None,
    ) -> Organization:
        """Create an organization with its system roles; the actor becomes its owner.

        A generated slug gets a random suffix on collision; an explicit one raises SlugTaken.
        """
        data = parse(OrganizationCreateIn, name=name, slug=slug, metadata=metadata)
        k = self._k
        for attempt in range(_SLUG_ATTEMPTS):
            candidate = data.slug or slugify(data.name)
            if data.slug is None and attempt:
                candidate = f"{candidate}-{secrets.token_hex(3)}"
            try:
                return k.write(
                    partial(self._create, actor_id=actor_id, data=data, slug=candidate, ctx=ctx)
                )
            except SlugTaken:
                if data.slug is not None or attempt == _SLUG_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _create(
        self,
        uow: UnitOfWork,
        *,
        actor_id: UUID,
        data: OrganizationCreateIn,
        slug: str,
        ctx: RequestContext | None,
    ) -> Organization:
        k = self._k
        actor = uow.users.get(actor_id)
        if actor is None or not actor.is_active:
            raise NotFound("user")
        now = k.now()
        org = Organization(
            id=new_id(),
            name=data.name,
            slug=slug,
            metadata=data.metadata or {},
            created_at=now,
            updated_at=now,
        )
        uow.organizations.add(org)
        roles = create_system_roles(k, uow, org.id)
        uow.memberships.add(
            Membership(
                id=new_id(),
                organization_id=org.id,
                user_id=actor_id,
                role_ids=frozenset({roles[OWNER].id}),
                joined_at=now,
                updated_at=now,
            )
        )
        k.audit(
            uow,
            "organization.created",
            ctx,
            actor=actor_id,
            org=org.id,
            target_type="organization",
            target_id=org.id,
            slug=slug,
        )
        return org

    def get(self, actor_id: UUID, organization_id: UUID) -> Organization:
        """Requires ``organization:read``; NotFound for outsiders."""
        self._authz.require(actor_id, organization_id, "organization:read")
        org = self._k.read(lambda uow: uow.organizations.get(organization_id))
        if org is None:
            raise NotFound("organization")
        return org

    def update(
        self,
        actor_id: UUID,
        organization_id: UUID,
        changes: Mapping[str, Any] | None = None,
        /,
        *,
        ctx: RequestContext | None = None,
        **fields: Any,
    ) -> Organization:
        """Change ``name``, ``slug`` and/or ``metadata`` (a mapping and/or keywords);
        requires ``organization:update``. Other fields raise ValidationError."""
        data = parse(OrganizationUpdateIn, merge_changes(changes, fields))
        fields = data.model_dump(exclude_unset=True)
        self._authz.require(actor_id, organization_id, "organization:update", ctx)
        k = self._k

        def body(uow: UnitOfWork) -> Organization:
            org = uow.organizations.get(organization_id, for_update=True)
            if org is None:
                raise NotFound("organization")
            if not fields:
                return org
            updated = replace(org, **{f: v for f, v in fields.items() if v is not None})
            updated = replace(updated, updated_at=k.now())
            uow.organizations.update(updated)
            k.audit(
                uow,
                "organization.updated",
                ctx,
                actor=actor_id,
                org=org.id,
                target_type="organization",
                target_id=org.id,
                fields=sorted(fields),
            )
            return updated

        return k.write(body)

    def delete(
        self, actor_id: UUID, organization_id: UUID, ctx: RequestContext | None = None
    ) -> None:
        """Delete with roles, memberships and invitations; requires ``organization:delete``."""
        self._authz.require(actor_id, organization_id, "organization:delete", ctx)
        k = self._k

        def body(uow: UnitOfWork) -> None:
            org = uow.organizations.get(organization_id, for_update=True)
            if org is None:
                raise NotFound("organization")
            uow.organizations.delete(organization_id)
            k.audit(
                uow,
                "organization.deleted",
                ctx,
                actor=actor_id,
                org=organization_id,
                target_type="organization",
                target_id=organization_id,
                slug=org.slug,
            )

        k.write(body)
        self._authz.invalidate(organization_id)

    def list_for_user(self, user_id: UUID) -> list[UserOrganization]:
        """The user's organizations with the user's roles in each."""

        def body(uow: UnitOfWork) -> list[UserOrganization]:
            result = []
            for membership in uow.memberships.list_for_user(user_id):
                org = uow.organizations.get(membership.organization_id)
                if org is None:
                    continue
                roles = uow.roles.get_many(org.id, membership.role_ids)
                result.append(UserOrganization(org, membership, tuple(roles)))
            return result

        return self._k.read(body, replica=True)

    def my_permissions(self, user_id: UUID, organization_id: UUID) -> EffectivePermissions:
        """The caller's effective permissions and roles; NotFound for outsiders."""
        return self._authz.require_member(user_id, organization_id)

    def ensure_system_roles(self) -> int:
        """Create missing system roles in every organization (seeding); how many were added."""
        k = self._k

        def body(uow: UnitOfWork) -> int:
            added = 0
            for org_id in uow.organizations.list_ids():
                for name, description in SYSTEM_ROLES.items():
                    if uow.roles.get_by_name(org_id, name) is None:
                        now = k.now()
                        uow.roles.add(
                            Role(
                                id=new_id(),
                                organization_id=org_id,
                                name=name,
                                description=description,
                                permissions=k.registry.system_role_permissions(name),
                                is_system=True,
                                created_at=now,
                                updated_at=now,
                            )
                        )
                        added += 1
            return added

        return k.write(body)


__all__ = ["MEMBER", "OrganizationService", "create_system_roles", "slugify"]
