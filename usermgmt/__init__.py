"""usermgmt: framework-agnostic user management for multi-tenant Python applications.

::

    from usermgmt import UserManagement, Settings

    um = UserManagement(Settings())       # configuration from the environment
    um = UserManagement.in_memory()       # every backend in memory, for tests
    usermgmt.configure_logging(um.settings)   # JSON logs, if the app wants ours

Importing this package imports no web framework, database driver or cloud SDK.
"""

from usermgmt import errors
from usermgmt.app import UserManagement
from usermgmt.backends import Backends
from usermgmt.clock import FakeClock, SystemClock
from usermgmt.config import Settings
from usermgmt.errors import UserMgmtError
from usermgmt.models import (
    Access,
    AccessClaims,
    AuditEvent,
    EffectivePermissions,
    Invitation,
    Membership,
    Organization,
    Page,
    Permission,
    RequestContext,
    Role,
    Session,
    TokenPair,
    User,
)
from usermgmt.observability.logging import configure_logging
from usermgmt.services.users import RegistrationResult

__version__ = "0.1.0.dev0"

__all__ = [
    "Access",
    "AccessClaims",
    "AuditEvent",
    "Backends",
    "EffectivePermissions",
    "FakeClock",
    "Invitation",
    "Membership",
    "Organization",
    "Page",
    "Permission",
    "RegistrationResult",
    "RequestContext",
    "Role",
    "Session",
    "Settings",
    "SystemClock",
    "TokenPair",
    "User",
    "UserManagement",
    "UserMgmtError",
    "__version__",
    "configure_logging",
    "errors",
]
