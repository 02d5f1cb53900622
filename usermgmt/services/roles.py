"""Roles: system roles are immutable; custom roles hold any subset of the catalogue.

Nobody grants what they do not hold: creating, changing, assigning or revoking a
role requires the actor's own permissions to cover the role's permissions (so an
admin can neither create an owner-like role nor make anyone owner).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from uuid import UUID

from usermgmt.errors import NotFound, PermissionDenied, RoleInUse, SystemRole, ValidationError
from usermgmt.ids import new_id
from usermgmt.models import EffectivePermissions, Permission, RequestContext, Role
from usermgmt.permissions import MEMBER, validate_permission_name
from usermgmt.ports import UnitOfWork
from usermgmt.schemas import RoleCreateIn, RoleUpdateIn, parse
from usermgmt.services.authorization import AuthorizationService
from usermgmt.services.base import Kernel


def resolve_roles(uow: UnitOfWork, organization_id: UUID, refs: Iterable[str]) -> list[Role]:
    """Roles of the organization named by id or by name; ValidationError for unknown ones."""
    found: dict[UUID, Role] = {}
    unknown: list[str] = []
    for ref in refs:
        role: Role | None = None
        try:
            role = uow.roles.get(organization_id, UUID(ref))
        except ValueError:
            role = uow.roles.get_by_name(organization_id, ref)
        if role is None:
            unknown.append(ref)
        else:
            found[role.id] = role
    if unknown:
        raise ValidationError(
            "Unknown role(s): " + ", ".join(sorted(unknown)[:10]),
            errors=[{"loc": ["roles"], "msg": f"unknown role {ref!r}"} for ref in unknown[:10]],
        )
    return list(found.values())


def _as_list(values: object) -> object:
    """``values`` as a list when it is a collection of names; anything else (a string,
    a number) is passed on as is so that validation rejects it with a ValidationError."""
    if isinstance(values, str | bytes | dict) or not isinstance(values, Iterable):
        return values
    return list(values)


def check_grantable(
    authz: AuthorizationService, actor: EffectivePermissions, roles: Iterable[Role]
) -> None:
    """PermissionDenied unless the actor holds every permission the roles grant."""
    missing = authz.permissions_of(list(roles)) - actor.permissions
    if missing:
        raise PermissionDenied(
            "You cannot grant or revoke permissions you do not hold.",
            missing=sorted(missing)[:20],
        )


class RoleService:
    def __init__(self, kernel: Kernel, authz: AuthorizationService) -> None:
        self._k = kernel
        self._authz = authz

    def catalogue(self) -> list[Permission]:
        """Every permission: system, registered by the application, and seeded in the store."""
        stored = self._k.read(lambda uow: uow.permissions.list(), replica=True)
        merged = {p.name: p for p in stored}
        merged.update({p.name: p for p in self._k.registry.all()})
        return sorted(merged.values(), key=lambda p: p.name)

    def list(self, actor_id: UUID, organization_id: UUID) -> list[Role]:
        """Requires ``role:read``."""
        self._authz.require(actor_id, organization_id, "role:read")
        return [self._live(r) for r in self._k.read(lambda uow: uow.roles.list(organization_id))]

    def get(self, actor_id: UUID, organization_id: UUID, role_id: UUID) -> Role:
        """Requires ``role:read``; NotFound for another organization's role."""
        self._authz.require(actor_id, organization_id, "role:read")
        role = self._k.read(lambda uow: uow.roles.get(organization_id, role_id))
        if role is None:
            raise NotFound("role")
        return self._live(role)

    def _live(self, role: Role) -> Role:
        """The role as checks see it: system roles follow the live catalogue, so an
        application permission registered after the role was stored shows up too."""
        if not role.is_system:
            return role
        return replace(role, permissions=self._authz.permissions_of([role]))

    def create(
        self,
        actor_id: UUID,
        organization_id: UUID,
        name: str,
        permissions: Iterable[str] = (),
        description: str = "",
        ctx: RequestContext | None = None,
    ) -> Role:
        """A custom role; requires ``role:manage`` and holding its permissions.

        Raises RoleNameTaken, ValidationError (unknown permission), PermissionDenied.
        """
        data = parse(
            RoleCreateIn, name=name, permissions=_as_list(permissions), description=description
        )
        actor = self._authz.require(actor_id, organization_id, "role:manage", ctx)
        granted = self._known(data.permissions)
        missing = granted - actor.permissions
        if missing:
            raise PermissionDenied(
                "You cannot grant permissions you do not hold.", missing=sorted(missing)[:20]
            )
        k = self._k

        def body(uow: UnitOfWork) -> Role:
            if uow.organizations.get(organization_id, for_update=True) is None:
                raise NotFound("organization")
            now = k.now()
            role = Role(
                id=new_id(),
                organization_id=organization_id,
                name=data.name,
                description=data.description,
                permissions=granted,
                is_system=False,
                created_at=now,
                updated_at=now,
            )
            uow.roles.add(role)
            k.audit(
                uow,
                "role.created",
                ctx,
                actor=actor_id,
                org=organization_id,
                target_type="role",
                target_id=role.id,
                name=role.name,
                permissions=sorted(granted),
            )
            return role

        return k.write(body)

    def update(
        self,
        actor_id: UUID,
        organization_id: UUID,
        role_id: UUID,
        *,
        name: str | None = None,
        description: str | None = None,
        permissions: Iterable[str] | None = None,
        ctx: RequestContext | None = None,
    ) -> Role:
        """Change a custom role. Raises SystemRole, RoleNameTaken, NotFound, PermissionDenied."""
        changes: dict[str, object] = {}
        if name is not None:
            changes["name"] = name
        if description is not None:
            changes["description"] = description
        if permissions is not None:
            changes["permissions"] = _as_list(permissions)
        data = parse(RoleUpdateIn, changes)
        actor = self._authz.require(actor_id, organization_id, "role:manage", ctx)
        granted = None if data.permissions is None else self._known(data.permissions)
        k = self._k

        def body(uow: UnitOfWork) -> Role:
            role = uow.roles.get(organization_id, role_id)
            if role is None:
                raise NotFound("role")
            if role.is_system:
                raise SystemRole(f"The system role {role.name!r} cannot be changed.")
            check_grantable(self._authz, actor, [role])
            if granted is not None:
                missing = granted - actor.permissions
                if missing:
                    raise PermissionDenied(
                        "You cannot grant permissions you do not hold.",
                        missing=sorted(missing)[:20],
                    )
            updated = replace(
                role,
                name=data.name if data.name is not None else role.name,
                description=data.description if data.description is not None else role.description,
                permissions=granted if granted is not None else role.permissions,
                updated_at=k.now(),
            )
            uow.roles.update(updated)
            k.audit(
                uow,
                "role.updated",
                ctx,
                actor=actor_id,
                org=organization_id,
                target_type="role",
                target_id=role_id,
                name=updated.name,
                permissions=sorted(updated.permissions),
            )
            return updated

        role = k.write(body)
        self._authz.invalidate(organization_id)
        return role

    def delete(
        self,
        actor_id: UUID,
        organization_id: UUID,
        role_id: UUID,
        ctx: RequestContext | None = None,
    ) -> None:
        """Delete a custom role nobody holds. Raises SystemRole, RoleInUse, NotFound."""
        actor = self._authz.require(actor_id, organization_id, "role:manage", ctx)
        k = self._k

        def body(uow: UnitOfWork) -> None:
            uow.organizations.get(organization_id, for_update=True)
            role = uow.roles.get(organization_id, role_id)
            if role is None:
                raise NotFound("role")
            if role.is_system:
                raise SystemRole(f"The system role {role.name!r} cannot be deleted.")
            check_grantable(self._authz, actor, [role])
            if uow.roles.is_assigned(role_id):
                raise RoleInUse("Remove the role from every member and invitation first.")
            uow.roles.delete(organization_id, role_id)
            k.audit(
                uow,
                "role.deleted",
                ctx,
                actor=actor_id,
                org=organization_id,
                target_type="role",
                target_id=role_id,
                name=role.name,
            )

        k.write(body)
        self._authz.invalidate(organization_id)

    def _known(self, names: Iterable[str]) -> frozenset[str]:
        catalogue = {p.name for p in self.catalogue()}
        wanted = frozenset(validate_permission_name(n) for n in names)
        unknown = wanted - catalogue
        if unknown:
            raise ValidationError(
                "Unknown permission(s): " + ", ".join(sorted(unknown)[:10]),
                errors=[
                    {"loc": ["permissions"], "msg": f"unknown permission {n!r}"}
                    for n in sorted(unknown)[:10]
                ],
            )
        return wanted


__all__ = ["MEMBER", "RoleService", "check_grantable", "resolve_roles"]
