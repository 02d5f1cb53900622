"""SEC-AU-02, statistical part: every failed-login branch costs one real password check.

Unknown, inactive and password-less (OAuth-only) accounts must not answer measurably
faster than a wrong password, or response times enumerate accounts. The deterministic
part (one hasher call per branch) lives with the service tests.
"""

from __future__ import annotations

import random
import statistics
import time

import pytest

from usermgmt import Settings, UserManagement
from usermgmt.config import ARGON2_MIN_MEMORY_KIB, ARGON2_MIN_PARALLELISM, ARGON2_MIN_TIME_COST
from usermgmt.errors import InvalidCredentials
from usermgmt.ids import new_id
from usermgmt.models import User
from usermgmt.ports import UnitOfWork
from usermgmt.services.auth import lockout_key
from usermgmt.testing import create_user

REQUESTS_PER_BRANCH = 60
WARM_UP_ROUNDS = 3
MAX_ROUNDS = 3
TOLERANCE = 0.10


def _oauth_only_user(um: UserManagement, email: str) -> User:
    def body(uow: UnitOfWork) -> User:
        now = um.clock.now()
        user = User(
            id=new_id(),
            email=email,
            created_at=now,
            updated_at=now,
            password_hash=None,  # signed up through Google: no usable password
            is_verified=True,
            email_verified_at=now,
        )
        uow.users.add(user)
        return user

    user: User = um.kernel.write(body)
    return user


@pytest.mark.slow
def test_failed_login_branches_take_the_same_time() -> None:
    um = UserManagement.in_memory(
        Settings.for_tests(
            # the OWASP floor: a realistic cost, so hashing dominates every branch
            password_argon2_memory_kib=ARGON2_MIN_MEMORY_KIB,
            password_argon2_time_cost=ARGON2_MIN_TIME_COST,
            password_argon2_parallelism=ARGON2_MIN_PARALLELISM,
            login_max_failures=100,  # the 60 failures of a round never lock an account
        )
    )
    active, password = create_user(um, "active@example.com")
    inactive, inactive_password = create_user(um, "inactive@example.com")
    admin, _ = create_user(um, "admin@example.com", superuser=True)
    um.admin.update_user(admin.id, inactive.id, is_active=False)
    assert not um.users.get(inactive.id).is_active
    oauth = _oauth_only_user(um, "oauth@example.com")
    assert oauth.password_hash is None
    assert um.users.get_by_email("nobody@example.com") is None

    # No RequestContext: the per-IP throttle has no subject and never interferes.
    branches: dict[str, tuple[str, str]] = {
        "wrong_password": (active.email, password + "-wrong"),
        "unknown_email": ("nobody@example.com", password),
        # the right password: only the inactive flag makes it fail
        "inactive_user": (inactive.email, inactive_password),
        "oauth_only_user": (oauth.email, password),
    }

    def attempt(branch: str) -> float:
        email, secret = branches[branch]
        start = time.perf_counter()
        with pytest.raises(InvalidCredentials):
            um.auth.login(email, secret)
        return time.perf_counter() - start

    def measure(rng: random.Random) -> dict[str, float]:
        """Median latency per branch over interleaved requests: each block holds every
        branch once in random order, so load changes during the run hit all alike."""
        for email, _ in branches.values():  # each round starts below the lockout threshold
            um.backends.attempts.reset(lockout_key(email))
        samples: dict[str, list[float]] = {b: [] for b in branches}
        for _ in range(REQUESTS_PER_BRANCH):
            block = list(branches)
            rng.shuffle(block)
            for branch in block:
                samples[branch].append(attempt(branch))
        return {b: statistics.median(s) for b, s in samples.items()}

    for _ in range(WARM_UP_ROUNDS):
        for branch in branches:
            attempt(branch)

    # A real leak (a branch skipping the hash) shows in every round; a burst of load from
    # other processes on a shared machine rarely twice in a row.
    rng = random.Random(20260101)
    reports = []
    for _ in range(MAX_ROUNDS):
        medians = measure(rng)
        reference = medians["wrong_password"]
        reports.append(", ".join(f"{b}={m * 1000:.1f}ms" for b, m in medians.items()))
        if all(abs(m - reference) <= TOLERANCE * reference for m in medians.values()):
            break
    else:
        pytest.fail("failed-login branches differ by more than 10%: " + " | ".join(reports))

    # the account still works: none of the above locked it or changed it
    assert um.auth.login(active.email, password).access_token
