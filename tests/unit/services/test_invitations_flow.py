"""Invitations: email and link, acceptance rules, single use, expiry, purpose, races (R5, R6)."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from uuid import UUID

import pytest

from usermgmt.app import UserManagement
from usermgmt.backends.memory import MemoryEmailSender
from usermgmt.clock import FakeClock
from usermgmt.errors import (
    AlreadyMember,
    EmailNotVerified,
    InvitationEmailMismatch,
    InvitationExpired,
    InvitationNotPending,
    NotFound,
    OneTimeTokenError,
    PermissionDenied,
    UserMgmtError,
    ValidationError,
)
from usermgmt.models import AuditEvent, InvitationStatus, Organization, User
from usermgmt.testing import create_user, extract_token


def _events(um: UserManagement, action: str | None = None) -> list[AuditEvent]:
    store = um.backends.uow.store
    with store.lock:
        found = sorted(store.audit.values(), key=lambda e: e.id)
    return [e for e in found if action is None or e.action == action]


def _invite(
    um: UserManagement, inviter: User, org_id: UUID, email: str, roles: list[str] | None = None
) -> tuple[Any, str]:
    invitation = um.invitations.create(inviter.id, org_id, email, roles=roles)
    message = um.outbox.last(to=email, template="invitation")
    assert message is not None
    return invitation, extract_token(message)


def _roles(um: UserManagement, org_id: UUID, user_id: UUID) -> set[str] | None:
    eff = um.authz.effective(user_id, org_id)
    return None if eff is None else set(eff.roles)


def _invitation(um: UserManagement, invitation_id: UUID) -> Any:
    store = um.backends.uow.store
    with store.lock:
        return store.invitations[invitation_id]


@pytest.fixture
def owner(make_user: Any) -> User:
    return make_user(name="Olivia Owner")[0]


@pytest.fixture
def org(um: UserManagement, owner: User) -> Organization:
    return um.organizations.create(owner.id, "Acme Widgets")


@pytest.fixture
def invitee(make_user: Any) -> User:
    return make_user(email="invitee@example.com")[0]


# --- creation and email ----------------------------------------------------------------------


def test_invite_sends_email_with_link_on_app_url(
    um: UserManagement, um_outbox: MemoryEmailSender, owner: User, org: Organization
) -> None:
    invitation = um.invitations.create(owner.id, org.id, "  NewPerson@Example.COM ")
    assert invitation.email == "newperson@example.com"
    assert invitation.status(um.clock.now()) is InvitationStatus.PENDING
    messages = um_outbox.find(to="newperson@example.com", template="invitation")
    assert len(messages) == 1
    text = messages[0].text
    token = extract_token(messages[0])
    settings = um.settings
    assert f"{settings.app_url}{settings.accept_invitation_path}?token={token}" in text
    assert "Acme Widgets" in text
    assert "Olivia Owner" in text
    events = _events(um, "invitation.created")
    assert len(events) == 1
    assert events[0].target_id == str(invitation.id)
    assert events[0].metadata["roles"] == ["member"]


def test_invite_requires_member_invite(
    um: UserManagement, owner: User, org: Organization, invitee: User, make_user: Any
) -> None:
    _, token = _invite(um, owner, org.id, invitee.email)
    um.invitations.accept(invitee.id, token)  # a plain member
    with pytest.raises(PermissionDenied):
        um.invitations.create(invitee.id, org.id, "friend@example.com")
    with pytest.raises(PermissionDenied):
        um.invitations.list(invitee.id, org.id)
    outsider, _ = make_user()
    with pytest.raises(NotFound):
        um.invitations.create(outsider.id, org.id, "friend@example.com")
    assert um.outbox.find(to="friend@example.com") == []
    assert len(_events(um, "invitation.created")) == 1


def test_invite_with_unknown_role_changes_nothing(
    um: UserManagement, owner: User, org: Organization
) -> None:
    before = um.backends.uow.store.counts()
    with pytest.raises(ValidationError):
        um.invitations.create(owner.id, org.id, "x@example.com", roles=["ghost"])
    assert um.backends.uow.store.counts() == before
    assert um.outbox.find(to="x@example.com") == []


def test_invite_existing_member_is_already_member(
    um: UserManagement, owner: User, org: Organization, invitee: User
) -> None:
    _, token = _invite(um, owner, org.id, invitee.email)
    um.invitations.accept(invitee.id, token)
    with pytest.raises(AlreadyMember) as info:
        um.invitations.create(owner.id, org.id, invitee.email.upper())
    assert info.value.code == "already_member"
    with pytest.raises(AlreadyMember):
        um.invitations.create(owner.id, org.id, owner.email)


def test_roles_default_to_member_and_explicit_roles_are_granted(
    um: UserManagement, owner: User, org: Organization, invitee: User, make_user: Any
) -> None:
    _, token = _invite(um, owner, org.id, invitee.email)
    membership = um.invitations.accept(invitee.id, token)
    assert membership.organization_id == org.id
    assert membership.user_id == invitee.id
    assert _roles(um, org.id, invitee.id) == {"member"}

    custom = um.roles.create(owner.id, org.id, "Auditor", ["audit:read"])
    other, _ = make_user()
    _, token = _invite(um, owner, org.id, other.email, ["admin", str(custom.id)])
    um.invitations.accept(other.id, token)
    assert _roles(um, org.id, other.id) == {"admin", "Auditor"}


# --- acceptance rules -------------------------------------------------------------------------


def test_accept_email_mismatch_then_right_user_still_can(
    um: UserManagement, owner: User, org: Organization, invitee: User, make_user: Any
) -> None:
    _, token = _invite(um, owner, org.id, invitee.email)
    intruder, _ = make_user()
    with pytest.raises(InvitationEmailMismatch) as info:
        um.invitations.accept(intruder.id, token)
    assert info.value.code == "invitation_email_mismatch"
    assert um.authz.effective(intruder.id, org.id) is None
    um.invitations.accept(invitee.id, token)  # the failed attempt did not consume it
    assert _roles(um, org.id, invitee.id) == {"member"}


def test_accept_requires_verified_email(
    um: UserManagement, owner: User, org: Organization, make_user: Any
) -> None:
    unverified, _ = make_user(email="late@example.com", verified=False)
    invitation, token = _invite(um, owner, org.id, "late@example.com")
    with pytest.raises(EmailNotVerified) as info:
        um.invitations.accept(unverified.id, token)
    assert info.value.code == "email_not_verified"
    assert um.authz.effective(unverified.id, org.id) is None
    assert _invitation(um, invitation.id).accepted_at is None
    # verifying the address through the real flow unblocks it
    verify_token = extract_token(um.outbox.last(to="late@example.com", template="verify_email"))
    um.users.verify_email(verify_token)
    um.invitations.accept(unverified.id, token)
    assert _roles(um, org.id, unverified.id) == {"member"}


def test_accept_matches_email_case_insensitively(
    um: UserManagement, owner: User, org: Organization, make_user: Any
) -> None:
    user, _ = make_user(email="Mixed.Case@Example.com")
    _, token = _invite(um, owner, org.id, "mixed.case@EXAMPLE.COM")
    um.invitations.accept(user.id, token)
    assert _roles(um, org.id, user.id) == {"member"}


def test_accept_by_unknown_or_inactive_user_is_refused(
    um: UserManagement, owner: User, org: Organization, invitee: User
) -> None:
    from usermgmt.ids import new_id

    invitation, token = _invite(um, owner, org.id, invitee.email)
    with pytest.raises(NotFound):
        um.invitations.accept(new_id(), token)
    um.users.deactivate(invitee.id)
    with pytest.raises(NotFound):
        um.invitations.accept(invitee.id, token)
    assert _invitation(um, invitation.id).accepted_at is None


def test_invite_token_single_use(
    um: UserManagement, owner: User, org: Organization, invitee: User
) -> None:
    invitation, token = _invite(um, owner, org.id, invitee.email)
    um.invitations.accept(invitee.id, token)
    stored = _invitation(um, invitation.id)
    assert stored.status(um.clock.now()) is InvitationStatus.ACCEPTED
    assert stored.accepted_by == invitee.id
    with pytest.raises(OneTimeTokenError) as info:
        um.invitations.accept(invitee.id, token)
    assert info.value.code == "token_invalid"
    # even after leaving, the used link does not bring them back
    um.members.leave(invitee.id, org.id)
    with pytest.raises(OneTimeTokenError):
        um.invitations.accept(invitee.id, token)
    assert um.authz.effective(invitee.id, org.id) is None
    assert len(_events(um, "invitation.accepted")) == 1


def test_invite_token_expiry(
    um: UserManagement, um_clock: FakeClock, owner: User, org: Organization, invitee: User
) -> None:
    invitation, token = _invite(um, owner, org.id, invitee.email)
    ttl = um.settings.invitation_ttl_seconds
    assert ttl <= 7 * 86400
    assert invitation.expires_at == invitation.created_at + timedelta(seconds=ttl)
    um_clock.advance(seconds=ttl)
    with pytest.raises(InvitationExpired) as info:
        um.invitations.accept(invitee.id, token)
    assert info.value.code == "invitation_expired"
    assert um.authz.effective(invitee.id, org.id) is None
    assert _invitation(um, invitation.id).status(um.clock.now()) is InvitationStatus.EXPIRED


def test_invite_token_just_before_expiry_works(
    um: UserManagement, um_clock: FakeClock, owner: User, org: Organization, invitee: User
) -> None:
    _, token = _invite(um, owner, org.id, invitee.email)
    um_clock.advance(seconds=um.settings.invitation_ttl_seconds - 1)
    um.invitations.accept(invitee.id, token)
    assert _roles(um, org.id, invitee.id) == {"member"}


def test_invite_token_purpose_binding(
    um: UserManagement, owner: User, org: Organization, make_user: Any
) -> None:
    user, password = make_user(email="purpose@example.com", verified=False)
    verify_token = extract_token(um.outbox.last(to=user.email, template="verify_email"))
    um.users.request_password_reset(user.email)
    reset_token = extract_token(um.outbox.last(to=user.email, template="password_reset"))
    _, invite_token = _invite(um, owner, org.id, user.email)

    # verification and reset tokens are not invitations
    for token in (verify_token, reset_token):
        with pytest.raises(OneTimeTokenError):
            um.invitations.accept(user.id, token)
    # an invitation token neither verifies an address nor resets a password
    with pytest.raises(OneTimeTokenError):
        um.users.verify_email(invite_token)
    with pytest.raises(OneTimeTokenError):
        um.users.reset_password(invite_token, "a brand new long passphrase 42")
    assert not um.users.get(user.id).is_verified
    um.auth.login(user.email, password)  # password unchanged
    # and each still works for its own purpose afterwards
    um.users.verify_email(verify_token)
    um.invitations.accept(user.id, invite_token)
    assert _roles(um, org.id, user.id) == {"member"}


@pytest.mark.parametrize("bad", ["", "short", "x" * 300, "not a token!", "../../etc/passwd"])
def test_accept_malformed_token(um: UserManagement, invitee: User, bad: str) -> None:
    with pytest.raises((OneTimeTokenError, ValidationError)):
        um.invitations.accept(invitee.id, bad)


def test_invite_token_hashed_at_rest(
    um: UserManagement, owner: User, org: Organization, invitee: User
) -> None:
    invitation, token = _invite(um, owner, org.id, invitee.email)
    stored = _invitation(um, invitation.id)
    assert stored.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in repr(invitation)
    store = um.backends.uow.store
    with store.lock:
        dump = repr(vars(store))
    assert token not in dump
    assert len(token) >= 43  # 256 bits of urlsafe base64


# --- revoke and replace -----------------------------------------------------------------------


def test_revoke_then_accept_fails(
    um: UserManagement, owner: User, org: Organization, invitee: User
) -> None:
    invitation, token = _invite(um, owner, org.id, invitee.email)
    um.invitations.revoke(owner.id, org.id, invitation.id)
    assert _invitation(um, invitation.id).status(um.clock.now()) is InvitationStatus.REVOKED
    with pytest.raises(OneTimeTokenError):
        um.invitations.accept(invitee.id, token)
    assert um.authz.effective(invitee.id, org.id) is None
    with pytest.raises(InvitationNotPending):
        um.invitations.revoke(owner.id, org.id, invitation.id)
    assert len(_events(um, "invitation.revoked")) == 1


def test_revoke_accepted_invitation_is_not_pending(
    um: UserManagement, owner: User, org: Organization, invitee: User
) -> None:
    invitation, token = _invite(um, owner, org.id, invitee.email)
    um.invitations.accept(invitee.id, token)
    with pytest.raises(InvitationNotPending):
        um.invitations.revoke(owner.id, org.id, invitation.id)
    assert _roles(um, org.id, invitee.id) == {"member"}
    assert _events(um, "invitation.revoked") == []


def test_revoke_requires_member_invite(
    um: UserManagement, owner: User, org: Organization, invitee: User, make_user: Any
) -> None:
    member, _ = make_user()
    _, token = _invite(um, owner, org.id, member.email)
    um.invitations.accept(member.id, token)
    invitation, _ = _invite(um, owner, org.id, invitee.email)
    with pytest.raises(PermissionDenied):
        um.invitations.revoke(member.id, org.id, invitation.id)
    assert _invitation(um, invitation.id).revoked_at is None


def test_reinvite_replaces_pending_invitation(
    um: UserManagement, owner: User, org: Organization, invitee: User
) -> None:
    first, first_token = _invite(um, owner, org.id, invitee.email)
    second, second_token = _invite(um, owner, org.id, invitee.email.upper(), ["admin"])
    assert first.id != second.id
    assert first_token != second_token
    now = um.clock.now()
    assert _invitation(um, first.id).status(now) is InvitationStatus.REVOKED
    pending = [
        i
        for i in um.invitations.list(owner.id, org.id).items
        if i.status(now) is InvitationStatus.PENDING
    ]
    assert [i.id for i in pending] == [second.id]
    with pytest.raises(OneTimeTokenError):
        um.invitations.accept(invitee.id, first_token)
    um.invitations.accept(invitee.id, second_token)
    assert _roles(um, org.id, invitee.id) == {"admin"}


def test_list_invitations_paginates(um: UserManagement, owner: User, org: Organization) -> None:
    created = [um.invitations.create(owner.id, org.id, f"p{i}@example.com").id for i in range(7)]
    seen: list[UUID] = []
    cursor = None
    while True:
        page = um.invitations.list(owner.id, org.id, limit=3, cursor=cursor)
        seen += [i.id for i in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == sorted(created)
    with pytest.raises(ValidationError):
        um.invitations.list(owner.id, org.id, cursor="%%%")


# --- R5 / R6: races -------------------------------------------------------------------------------


def _run_together(calls: list[Callable[[], object]]) -> list[tuple[object, BaseException | None]]:
    barrier = threading.Barrier(len(calls))
    outcomes: list[tuple[object, BaseException | None]] = [(None, None)] * len(calls)

    def worker(i: int) -> None:
        barrier.wait()
        try:
            outcomes[i] = (calls[i](), None)
        except BaseException as exc:
            outcomes[i] = (None, exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    return outcomes


def test_invite_token_concurrent_use(
    um: UserManagement, owner: User, org: Organization, invitee: User
) -> None:
    """R5: 20 parallel accepts of one link by its invitee → one membership, one event."""
    invitation, token = _invite(um, owner, org.id, invitee.email)
    outcomes = _run_together([lambda: um.invitations.accept(invitee.id, token)] * 20)
    winners = [result for result, error in outcomes if error is None]
    errors = [error for _, error in outcomes if error is not None]
    assert len(winners) == 1
    assert len(errors) == 19
    assert all(isinstance(e, UserMgmtError) for e in errors), errors
    store = um.backends.uow.store
    memberships = [
        m
        for m in store.memberships.values()
        if (m.organization_id, m.user_id) == (org.id, invitee.id)
    ]
    assert len(memberships) == 1
    assert len(_events(um, "invitation.accepted")) == 1
    assert _invitation(um, invitation.id).accepted_by == invitee.id


def test_invite_link_raced_by_several_users_admits_only_the_invitee(
    um: UserManagement, owner: User, org: Organization, invitee: User
) -> None:
    others = [create_user(um)[0] for _ in range(5)]
    _, token = _invite(um, owner, org.id, invitee.email)
    users = [*others, invitee, *others]
    outcomes = _run_together([lambda u=u: um.invitations.accept(u.id, token) for u in users])
    ok = [users[i] for i, (_, error) in enumerate(outcomes) if error is None]
    assert ok == [invitee]
    assert all(
        isinstance(error, InvitationEmailMismatch)
        for i, (_, error) in enumerate(outcomes)
        if users[i] is not invitee
    )
    assert all(um.authz.effective(u.id, org.id) is None for u in others)


def test_invite_accept_vs_revoke_race(
    um: UserManagement, owner: User, org: Organization, make_user: Any
) -> None:
    """R6: accept and revoke interleaved → member+accepted or no member+revoked, never both."""
    users = [make_user()[0] for _ in range(25)]
    outcomes_seen: set[str] = set()
    for user in users:
        invitation, token = _invite(um, owner, org.id, user.email)
        outcomes = _run_together(
            [
                lambda u=user, t=token: um.invitations.accept(u.id, t),
                lambda i=invitation: um.invitations.revoke(owner.id, org.id, i.id),
            ]
        )
        (_, accept_error), (_, revoke_error) = outcomes
        stored = _invitation(um, invitation.id)
        is_member = um.authz.effective(user.id, org.id) is not None
        assert (accept_error is None) != (revoke_error is None), outcomes
        if accept_error is None:
            assert is_member
            assert stored.accepted_at is not None
            assert stored.revoked_at is None
            assert isinstance(revoke_error, InvitationNotPending)
            outcomes_seen.add("accepted")
        else:
            assert not is_member
            assert stored.revoked_at is not None
            assert stored.accepted_at is None
            assert isinstance(accept_error, OneTimeTokenError)
            outcomes_seen.add("revoked")
    assert outcomes_seen  # at least one case ran; both orders are legal
