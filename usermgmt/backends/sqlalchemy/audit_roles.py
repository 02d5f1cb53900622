"""PostgreSQL privileges that make the audit trail append-only (SECURITY.md SEC-LG-05).

The application's role may read and append audit events but never update or delete
them; a separate archiver role (``usermgmt audit archive`` runs with its
``DATABASE_URL``) may delete them, which it does only in the transaction that records
the verified archive object in the ledger. Run the statements as the owner of the
tables after ``usermgmt db migrate`` (and again after a later migration adds tables)::

    from usermgmt.backends.sqlalchemy.audit_roles import grant_statements
    print(";\\n".join(grant_statements("usermgmt_app", "usermgmt_archiver")))

The roles must exist already (``CREATE ROLE usermgmt_app LOGIN PASSWORD ...``).
The application's grant covers every other table, among them ``lockout_counters`` (0003:
the login lockout, read and written on every login without Redis).
"""

from __future__ import annotations

import re

__all__ = ["grant_statements"]

_ROLE = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_AUDIT = "audit_logs"
_HEADS = "audit_chain_heads"
_LEDGER = "audit_archive_batches"


def grant_statements(app_role: str, archiver_role: str, schema: str = "public") -> list[str]:
    """The GRANT / REVOKE statements for the two roles; ValueError for a bad name."""
    for name in (app_role, archiver_role, schema):
        if not _ROLE.fullmatch(name):
            raise ValueError(f"not a plain lowercase SQL identifier: {name!r}")
    return [
        f"GRANT USAGE ON SCHEMA {schema} TO {app_role}, {archiver_role}",
        # the application: everything on its tables ...
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {app_role}",
        # ... but the audit trail is append-only, and the ledger is the archiver's
        f"REVOKE UPDATE, DELETE, TRUNCATE ON {schema}.{_AUDIT} FROM {app_role}",
        f"REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON {schema}.{_LEDGER} FROM {app_role}",
        f"REVOKE DELETE, TRUNCATE ON {schema}.{_HEADS} FROM {app_role}",
        # the archiver: read the chains, delete archived rows, write the ledger
        f"GRANT SELECT, DELETE ON {schema}.{_AUDIT} TO {archiver_role}",
        f"GRANT SELECT ON {schema}.{_HEADS} TO {archiver_role}",
        f"GRANT SELECT, INSERT ON {schema}.{_LEDGER} TO {archiver_role}",
        f"GRANT SELECT ON {schema}.alembic_version TO {archiver_role}",
    ]
