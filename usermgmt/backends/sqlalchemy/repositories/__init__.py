"""The SQL repositories, one class per port (see :mod:`usermgmt.ports`)."""

from usermgmt.backends.sqlalchemy.repositories._base import SqlRepository, SqlTransaction
from usermgmt.backends.sqlalchemy.repositories.auth import (
    SqlAuditArchiveRepository,
    SqlAuditLogRepository,
    SqlOAuthAccountRepository,
    SqlOneTimeTokenRepository,
    SqlSessionRepository,
)
from usermgmt.backends.sqlalchemy.repositories.invitations import SqlInvitationRepository
from usermgmt.backends.sqlalchemy.repositories.roles import (
    SqlMembershipRepository,
    SqlRoleRepository,
)
from usermgmt.backends.sqlalchemy.repositories.users import (
    SqlOrganizationRepository,
    SqlPermissionRepository,
    SqlUserRepository,
)

__all__ = [
    "SqlAuditArchiveRepository",
    "SqlAuditLogRepository",
    "SqlInvitationRepository",
    "SqlMembershipRepository",
    "SqlOAuthAccountRepository",
    "SqlOneTimeTokenRepository",
    "SqlOrganizationRepository",
    "SqlPermissionRepository",
    "SqlRepository",
    "SqlRoleRepository",
    "SqlSessionRepository",
    "SqlTransaction",
    "SqlUserRepository",
]
