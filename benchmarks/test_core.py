"""Core benchmarks on the in-memory backends (run with ``nox -s bench``).

Targets (issue "Core"): a cached permission check p50 <= 5 us; verifying an access
token with its revocation check p50 <= 60 us; a login costs at most 5 % more than
one password verification at the same argon2 parameters.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import pytest

from usermgmt import Settings, UserManagement
from usermgmt.testing import create_user

pytestmark = pytest.mark.filterwarnings("ignore::pytest_benchmark.logger.PytestBenchmarkWarning")


def _median_us(fn: Callable[[], object], rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - start)
    return statistics.median(samples) / 1000


@pytest.fixture(scope="module")
def um() -> UserManagement:
    # the system clock, as in production; cheap argon2 (these benchmarks are not about hashing)
    return UserManagement.in_memory()


def test_cached_permission_check(benchmark: pytest.FixtureDef, um: UserManagement) -> None:
    user, _ = create_user(um)
    org = um.organizations.create(user.id, name="Bench")
    assert um.authz.has_permission(user.id, org.id, "member:read")  # warm the cache
    benchmark.pedantic(
        um.authz.has_permission, args=(user.id, org.id, "member:read"), rounds=20000, iterations=1
    )
    p50 = _median_us(lambda: um.authz.has_permission(user.id, org.id, "member:read"), 20000)
    print(f"\ncached permission check p50 = {p50:.2f} us")
    assert p50 <= 5.0


def test_verify_access_token(benchmark: pytest.FixtureDef, um: UserManagement) -> None:
    user, password = create_user(um)
    pair = um.auth.login(email=user.email, password=password)
    um.auth.verify_access_token(pair.access_token)
    benchmark.pedantic(
        um.auth.verify_access_token, args=(pair.access_token,), rounds=20000, iterations=1
    )
    p50 = _median_us(lambda: um.auth.verify_access_token(pair.access_token), 20000)
    print(f"\naccess-token verification (seen before) p50 = {p50:.2f} us")
    assert p50 <= 60.0


def test_verify_access_token_first_sight(um: UserManagement) -> None:
    user, password = create_user(um)
    tokens = [um.auth.login(email=user.email, password=password).access_token for _ in range(400)]
    it = iter(tokens)
    p50 = _median_us(lambda: um.auth.verify_access_token(next(it)), len(tokens))
    codec = um.kernel.codecs.access
    decode = _median_us(lambda: codec.decode(tokens[0], typ="access"), 2000)
    print(
        f"\naccess-token verification (first sight) p50 = {p50:.2f} us; "
        f"JWT decode alone p50 = {decode:.2f} us"
    )
    assert p50 <= decode * 1.5


def test_login_overhead_over_one_verification() -> None:
    settings = Settings.for_tests(
        password_argon2_memory_kib=65536, password_argon2_time_cost=3, password_argon2_parallelism=4
    )
    um = UserManagement.in_memory(settings)
    user, password = create_user(um)
    stored = um.users.get(user.id).password_hash
    assert stored is not None
    verify = statistics.median(
        _median_us(lambda: um.hasher.verify(password, stored), 1) for _ in range(15)
    )
    login = statistics.median(
        _median_us(lambda: um.auth.login(email=user.email, password=password), 1) for _ in range(15)
    )
    overhead = (login - verify) / verify
    print(
        f"\nlogin p50 = {login / 1000:.2f} ms, one verification p50 = {verify / 1000:.2f} ms, "
        f"overhead = {overhead * 100:.2f} %"
    )
    assert overhead <= 0.05
