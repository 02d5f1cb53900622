"""The permission catalogue: system permissions, system roles, app-registered permissions."""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Iterable

from usermgmt.errors import ValidationError
from usermgmt.models import Permission

PERMISSION_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,62}:[a-z][a-z0-9_-]{0,62}$")

SYSTEM_PERMISSIONS: dict[str, str] = {
    "organization:read": "View the organization",
    "organization:update": "Change the organization's name, slug and metadata",
    "organization:delete": "Delete the organization",
    "member:read": "List members and their roles",
    "member:invite": "Invite people and manage invitations",
    "member:update": "Change members' roles",
    "member:remove": "Remove members",
    "role:read": "List roles and their permissions",
    "role:manage": "Create, change and delete custom roles",
    "audit:read": "Read the organization's audit trail",
}

OWNER = "owner"
ADMIN = "admin"
MEMBER = "member"

#: System roles created for every organization; immutable. Owner and admin grant
#: every permission of the catalogue (admin: all but ``organization:delete``),
#: including permissions the application registers later, so their grants are
#: computed from the registry when checked, never frozen at creation.
SYSTEM_ROLES: dict[str, str] = {
    OWNER: "Full control, including deleting the organization",
    ADMIN: "Everything but deleting the organization",
    MEMBER: "Read the organization, its members and roles",
}
MEMBER_PERMISSIONS = frozenset({"organization:read", "member:read", "role:read"})
ADMIN_EXCLUDED = frozenset({"organization:delete"})


def validate_permission_name(name: str) -> str:
    """Return ``name`` if it is ``resource:action``; raise ValidationError otherwise."""
    if not isinstance(name, str) or not PERMISSION_PATTERN.match(name):
        raise ValidationError(
            f"{name!r} is not a permission name of the form resource:action "
            "(lowercase letters, digits, '-' and '_')",
            errors=[{"loc": ["permissions"], "msg": "invalid permission name"}],
        )
    return name


class PermissionRegistry:
    """System permissions plus the ones the application registers; thread-safe."""

    def __init__(self, extra: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._permissions: dict[str, Permission] = {
            name: Permission(name=name, description=description, is_system=True)
            for name, description in SYSTEM_PERMISSIONS.items()
        }
        self._fingerprint = ""
        self._refresh_fingerprint()
        for name in extra:
            self.register(name)

    def _refresh_fingerprint(self) -> None:
        names = "\n".join(sorted(self._permissions)).encode()
        self._fingerprint = hashlib.sha256(names).hexdigest()[:12]

    @property
    def fingerprint(self) -> str:
        """A short digest of the catalogue: processes running the same code agree on it,
        and it changes whenever a permission is registered (cached answers carry it)."""
        return self._fingerprint

    def register(self, name: str, description: str = "") -> Permission:
        """Add an application permission; re-registering keeps the first description.

        Raises ValidationError for a malformed name.
        """
        validate_permission_name(name)
        with self._lock:
            existing = self._permissions.get(name)
            if existing is not None:
                return existing
            permission = Permission(name=name, description=description[:500], is_system=False)
            self._permissions[name] = permission
            self._refresh_fingerprint()
            return permission

    def __contains__(self, name: object) -> bool:
        return name in self._permissions

    def names(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._permissions)

    def all(self) -> list[Permission]:
        with self._lock:
            return sorted(self._permissions.values(), key=lambda p: p.name)

    def system_role_permissions(self, role: str) -> frozenset[str]:
        """The permissions a system role grants now (owner: every known permission)."""
        if role == OWNER:
            return self.names()
        if role == ADMIN:
            return self.names() - ADMIN_EXCLUDED
        if role == MEMBER:
            return MEMBER_PERMISSIONS
        raise KeyError(role)
