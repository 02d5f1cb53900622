"""Registration, forgot-password throttling and email outages
(SEC-AU-03, SEC-AU-06, SEC-RL-08, SEC-PW-14, race R1, fault F8)."""

from __future__ import annotations

from typing import Any

import pytest

from usermgmt.app import UserManagement
from usermgmt.clock import FakeClock
from usermgmt.errors import EmailDeliveryError, EmailTaken
from usermgmt.ports import EmailMessage
from usermgmt.services.users import RegistrationResult
from usermgmt.testing import create_user, extract_token, make_um, random_password

ITERATIONS = 20


def _user_count(um: UserManagement) -> int:
    return um.kernel.read(lambda uow: uow.users.count())


def test_register_existing_email_looks_like_a_new_one(um: UserManagement, auth_audit: Any) -> None:
    """SEC-AU-03: registering an existing address answers like a new registration (a
    RegistrationResult; ``user`` None so nothing leaks), creates nothing, and mails the owner
    an ``existing_account`` notice instead of a verification link."""
    new = um.users.register("alice@example.com", random_password())
    assert isinstance(new, RegistrationResult)
    assert new.created
    assert new.user is not None

    for variant in ("alice@example.com", "ALICE@Example.com"):
        again = um.users.register(variant, random_password(), name="Someone Else")
        assert type(again) is RegistrationResult
        assert again.user is None
        assert again.created is False

    assert _user_count(um) == 1
    assert len(um.outbox.find(to="alice@example.com", template="verify_email")) == 1
    assert len(um.outbox.find(to="alice@example.com", template="existing_account")) == 2
    assert len(auth_audit(um, "user.registered")) == 1
    assert um.users.get(new.user.id).name is None  # the second attempt changed nothing


def test_register_existing_email_notices_are_throttled(um: UserManagement) -> None:
    """SEC-RL-08 (mail bombing): repeated registrations of one address send at most 5
    notices per hour, silently (the answer does not change)."""
    create_user(um, "owner@example.com")
    results = [um.users.register("owner@example.com", random_password()) for _ in range(7)]
    assert all(r == RegistrationResult(user=None) for r in results)
    assert len(um.outbox.find(to="owner@example.com", template="existing_account")) == 5


def test_register_without_enumeration_prevention_raises_email_taken() -> None:
    """PREVENT_ENUMERATION=false: an existing address raises EmailTaken, no mail is sent."""
    um = make_um(prevent_enumeration=False)
    create_user(um, "bob@example.com")
    sent = len(um.outbox)
    with pytest.raises(EmailTaken):
        um.users.register("Bob@Example.com", random_password())
    assert len(um.outbox) == sent
    assert _user_count(um) == 1


def test_register_concurrent_case_variants(um: UserManagement, auth_concurrently: Any) -> None:
    """R1: 20 parallel registrations of ``A@x.com`` / ``a@x.com`` → exactly one user; every
    other caller gets the generic result, never an exception."""
    for iteration in range(ITERATIONS):
        local = f"race{iteration}"
        emails = [f"{local.upper()}@X.com" if i % 2 else f"{local}@x.com" for i in range(20)]

        results = auth_concurrently(
            20, lambda i, emails=emails: um.users.register(emails[i], random_password())
        )

        assert all(ok for ok, _ in results), [v for ok, v in results if not ok]
        created = [r.user for _, r in results if r.user is not None]
        assert len(created) == 1
        assert all(r == RegistrationResult(user=None) for _, r in results if r.user is None)
        assert _user_count(um) == iteration + 1
        assert um.users.get_by_email(f"{local}@x.com").id == created[0].id


def test_register_fresh_install_has_no_users() -> None:
    """SEC-PW-14: no default accounts: a fresh instance has zero users (and no superuser)."""
    um = make_um()
    assert _user_count(um) == 0
    listing = um.kernel.read(lambda uow: uow.users.list(email_prefix=None, limit=10, after=None))
    assert listing == []


def test_register_mails_a_working_verification_link(um: UserManagement) -> None:
    """SEC-AU-03 (new address): the account is created unverified and gets a verify link."""
    result = um.users.register("carol@example.com", random_password(), name="Carol")
    assert result.user is not None
    assert result.user.is_verified is False
    message = um.outbox.last(to="carol@example.com", template="verify_email")
    assert um.users.verify_email(extract_token(message)).is_verified


# --- forgot password ------------------------------------------------------------------------


def test_register_forgot_password_throttled_per_address(
    um: UserManagement, um_clock: FakeClock
) -> None:
    """SEC-RL-08: 6 forgot-password requests for one address within an hour → 5 mails, the
    same (None) answer each time; unknown addresses answer the same with no mail."""
    user, _ = create_user(um)
    answers = [um.users.request_password_reset(user.email) for _ in range(6)]
    assert answers == [None] * 6
    assert len(um.outbox.find(to=user.email, template="password_reset")) == 5

    unknown = [um.users.request_password_reset("ghost@example.com") for _ in range(6)]
    assert unknown == [None] * 6
    assert um.outbox.find(to="ghost@example.com") == []

    um_clock.advance(seconds=3601)
    um.users.request_password_reset(user.email)
    assert len(um.outbox.find(to=user.email, template="password_reset")) == 6


def test_register_reset_returns_no_tokens(um: UserManagement, make_user: Any) -> None:
    """SEC-AU-06: the reset does not log the user in (returns None, opens no session)."""
    user, _ = make_user()
    um.users.request_password_reset(user.email)
    token = extract_token(um.outbox.last(to=user.email, template="password_reset"))
    assert um.users.reset_password(token, random_password()) is None
    assert um.users.list_sessions(user.id) == []


# --- email provider down (F8) ---------------------------------------------------------------


def test_register_email_outage_is_invisible_to_the_caller(um: UserManagement) -> None:
    """F8: with the provider failing, register and forgot-password still return normally;
    the failed mails are recorded by the queue; the tokens stay valid (a later delivery of
    the same job would work)."""
    existing, _ = create_user(um, "dora@example.com")
    um.outbox.fail_with = EmailDeliveryError("down", transient=True)

    result = um.users.register("erin@example.com", random_password())
    assert result.user is not None
    assert um.users.request_password_reset(existing.email) is None
    assert um.users.register("dora@example.com", random_password()) == RegistrationResult(None)

    queue = um.backends.queue
    failed = {job.payload["template"]: job for job in queue.failed}  # type: ignore[attr-defined]
    assert set(failed) == {"verify_email", "password_reset", "existing_account"}
    assert all(job.task == "email.send" for job in failed.values())
    assert all(job.attempts == queue.max_attempts for job in failed.values())  # type: ignore[attr-defined]
    assert len(um.outbox.find(to="erin@example.com")) == 0

    um.outbox.fail_with = None
    verify_token = extract_token(_as_message(failed["verify_email"].payload))
    reset_token = extract_token(_as_message(failed["password_reset"].payload))
    assert um.users.verify_email(verify_token).is_verified
    new_password = random_password()
    assert um.users.reset_password(reset_token, new_password) is None
    assert um.auth.login(existing.email, new_password).session_id


def test_register_permanent_email_failure_is_not_retried(um: UserManagement) -> None:
    """F8: a permanent provider refusal is recorded once, without retries, and still does
    not reach the caller."""
    um.outbox.fail_with = EmailDeliveryError("rejected", transient=False)
    assert um.users.register("frank@example.com", random_password()).user is not None
    [job] = um.backends.queue.failed  # type: ignore[attr-defined]
    assert job.attempts == 1


def _as_message(payload: Any) -> EmailMessage:
    return EmailMessage(
        to=payload["to"], subject=payload["subject"], text=payload["text"], template="x"
    )
