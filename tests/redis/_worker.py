"""A separate application process for the cross-process tests.

Started as ``python tests/redis/_worker.py`` with ``USERMGMT_WORKER_SETTINGS`` (a JSON
object of settings). It builds one :class:`~usermgmt.UserManagement` and then answers
one JSON command per line on stdin with one JSON line on stdout::

    {"op": "login", "email": "...", "password": "..."}  ->  {"ok": true, "result": {...}}
    {"op": "authenticate", "token": "..."}              ->  {"ok": false, "error": "TokenRevoked"}
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any
from uuid import UUID

from usermgmt.app import UserManagement
from usermgmt.config import Settings
from usermgmt.testing import create_user, extract_token


def _setup(um: UserManagement) -> dict[str, Any]:
    """An owner, a member (role ``member``) and their organization."""
    owner, _ = create_user(um)
    member, member_password = create_user(um)
    org = um.organizations.create(owner.id, "Cross-process")
    um.invitations.create(owner.id, org.id, member.email)
    um.invitations.accept(member.id, extract_token(um.outbox.last(to=member.email)))
    return {
        "owner": str(owner.id),
        "member": str(member.id),
        "member_email": member.email,
        "member_password": member_password,
        "org": str(org.id),
    }


def _handle(um: UserManagement, command: dict[str, Any]) -> Any:
    op = command["op"]
    if op == "setup":
        return _setup(um)
    if op == "login":
        pair = um.auth.login(command["email"], command["password"])
        return {"access": pair.access_token, "session": str(pair.session_id)}
    if op == "authenticate":
        return str(um.auth.authenticate(command["token"]).id)
    if op == "logout":
        um.auth.logout(UUID(command["user"]), UUID(command["session"]))
        return None
    if op == "change_password":
        um.users.change_password(
            UUID(command["user"]),
            command["current"],
            command["new"],
            keep_session_id=UUID(command["keep"]),
        )
        return None
    if op == "has_permission":
        return um.authz.has_permission(
            UUID(command["user"]), UUID(command["org"]), command["permission"]
        )
    if op == "update_roles":
        um.members.update_roles(
            UUID(command["actor"]), UUID(command["org"]), UUID(command["user"]), command["roles"]
        )
        return None
    if op == "rate":
        result = um.check_request_rate(command["client"])
        assert result is not None
        return {"allowed": result.allowed, "remaining": result.remaining}
    raise ValueError(f"unknown op {op!r}")


def main() -> None:
    settings = Settings.for_tests(**json.loads(os.environ["USERMGMT_WORKER_SETTINGS"]))
    um = UserManagement(settings)
    um.seed()
    print(json.dumps({"ok": True, "result": "ready", "pid": os.getpid()}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        if command["op"] == "quit":
            break
        try:
            reply = {"ok": True, "result": _handle(um, command)}
        except Exception as exc:
            reply = {"ok": False, "error": type(exc).__name__, "detail": str(exc)}
        print(json.dumps(reply), flush=True)
    um.close()


if __name__ == "__main__":
    main()
