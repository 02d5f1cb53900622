"""Password hashing and policy: SECURITY.md section 1A (SEC-PW-*) and SEC-AU-02."""

from __future__ import annotations

import gzip
import logging
import re
import threading
import time
import unicodedata
from importlib import resources
from typing import Any

import bcrypt
import pytest

from usermgmt.config import Settings
from usermgmt.errors import (
    ConfigurationError,
    PasswordBreached,
    PasswordPolicyError,
    PasswordTooCommon,
    PasswordTooLong,
    PasswordTooShort,
)
from usermgmt.security import passwords
from usermgmt.security.blocklist import CommonPasswords, default_blocklist
from usermgmt.security.passwords import (
    Argon2Parameters,
    PasslibHasher,
    PasswordPolicy,
    normalize_password,
)

CHEAP = Argon2Parameters(memory_kib=1024, time_cost=1, parallelism=1)
PASSPHRASE = "quiet lantern meadow orbit"


def uncommon(n: int) -> str:
    """A password of ``n`` characters that is on no list."""
    return "".join("kxqvjzwmbtfhgpdlnrsc"[(i * 7) % 20] for i in range(n))


def bundled_entries() -> list[str]:
    path = resources.files("usermgmt.security") / "data" / "common-passwords.txt.gz"
    return gzip.decompress(path.read_bytes()).decode("utf-8").splitlines()


class SpyContext:
    """Wraps the hasher's CryptContext and records completed hash/verify calls."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[tuple[str, str | None]] = []

    def hash(self, secret: str) -> str:
        self.calls.append(("hash", None))
        return str(self.inner.hash(secret))

    def verify(self, secret: str, hashed: str) -> bool:
        try:
            result = bool(self.inner.verify(secret, hashed))
        except Exception:
            # Refused while parsing the hash, before any hashing work.
            self.calls.append(("refused", hashed))
            raise
        self.calls.append(("verify", hashed))
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def count(self, kind: str) -> int:
        return sum(1 for call, _ in self.calls if call == kind)


class FakeBreachChecker:
    def __init__(self, result: bool | Exception) -> None:
        self.result = result
        self.seen: list[str] = []

    def is_breached(self, password: str) -> bool:
        self.seen.append(password)
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


@pytest.fixture(scope="module")
def hasher() -> PasslibHasher:
    return PasslibHasher(CHEAP)


@pytest.fixture
def spy(hasher: PasslibHasher, monkeypatch: pytest.MonkeyPatch) -> SpyContext:
    hasher.warm_up()
    spy = SpyContext(hasher._context)
    monkeypatch.setattr(hasher, "_context", spy)
    return spy


@pytest.fixture(scope="module")
def policy() -> PasswordPolicy:
    return PasswordPolicy.from_settings(Settings.for_tests())


# --- SEC-PW-01: minimum length -----------------------------------------------------------


@pytest.mark.parametrize(
    ("min_length", "length", "accepted"),
    [
        (None, 7, False),
        (None, 8, False),
        (None, 14, False),
        (None, 15, True),
        (8, 7, False),
        (8, 8, True),
        (8, 14, True),
        (8, 15, True),
    ],
)
def test_password_policy_min_length_sec_pw_01(
    min_length: int | None, length: int, accepted: bool
) -> None:
    overrides = {} if min_length is None else {"password_min_length": min_length}
    settings = Settings.for_tests(**overrides)
    policy = PasswordPolicy.from_settings(settings)
    assert policy.min_length == (min_length or 15)
    password = uncommon(length)
    if accepted:
        policy.check(password)
    else:
        with pytest.raises(PasswordTooShort) as info:
            policy.check(password)
        assert info.value.code == "password_too_short"
        assert f"at least {policy.min_length} characters" in info.value.detail


@pytest.mark.parametrize("password", ["é" * 15, "e\u0301" * 15], ids=["nfc", "nfd"])
def test_password_policy_counts_code_points_sec_pw_01(
    policy: PasswordPolicy, password: str
) -> None:
    """15 code points after NFKC (30 UTF-8 bytes) meet the default minimum of 15."""
    assert len(normalize_password(password).encode("utf-8")) == 30
    policy.check(password)
    with pytest.raises(PasswordTooShort):
        policy.check("é" * 14)


def test_password_min_length_below_8_refused_at_startup_sec_pw_01() -> None:
    with pytest.raises(ConfigurationError, match="PASSWORD_MIN_LENGTH"):
        Settings.for_tests(password_min_length=7)
    with pytest.raises(ConfigurationError):
        PasswordPolicy(7, 1024, default_blocklist())
    with pytest.raises(ConfigurationError):
        PasswordPolicy(15, 63, default_blocklist())


# --- SEC-PW-02/03: long passwords, verified exactly ------------------------------------


@pytest.mark.parametrize("length", [64, 128])
def test_password_long_accepted_sec_pw_02(
    policy: PasswordPolicy, hasher: PasslibHasher, length: int
) -> None:
    password = uncommon(length)
    policy.check(password)
    hashed = hasher.hash(password)
    assert hasher.verify(password, hashed)
    assert not hasher.verify(password[:-1], hashed)


def test_password_verified_exactly_sec_pw_03(hasher: PasslibHasher) -> None:
    password = "Tranquil-Harbor-Lights-42"
    hashed = hasher.hash(password)
    assert hasher.verify(password, hashed)
    for variant in (
        password[:-1],
        password + "x",
        password.upper(),
        " " + password,
        password + " ",
    ):
        assert not hasher.verify(variant, hashed), variant


@pytest.mark.parametrize("prefix", ["a" * 72, "é" * 36], ids=["ascii", "two-byte"])
def test_password_over_72_bytes_changed_at_byte_73_fails_sec_pw_03(
    hasher: PasslibHasher, prefix: str
) -> None:
    assert len(prefix.encode("utf-8")) == 72
    password = prefix + "XYZ"
    hashed = hasher.hash(password)
    assert hashed.startswith("$argon2id$")
    assert hasher.verify(password, hashed)
    assert not hasher.verify(prefix + "QYZ", hashed)
    assert not hasher.verify(prefix, hashed)


@pytest.mark.parametrize("prefix", ["a" * 72, "é" * 36], ids=["ascii", "two-byte"])
def test_bcrypt_hash_never_truncates_sec_pw_03_sec_pw_11(
    hasher: PasslibHasher, prefix: str, spy: SpyContext
) -> None:
    """A bcrypt hash of a 72-byte prefix must not verify any longer password."""
    legacy = bcrypt.hashpw(prefix.encode("utf-8"), bcrypt.gensalt(rounds=4)).decode()
    assert hasher.verify(prefix, legacy)
    spy.calls.clear()
    assert not hasher.verify(prefix + "X", legacy)
    assert not hasher.verify(prefix + "é", legacy)
    # Refused before bcrypt sees it: the only verifications ran against the dummy hash.
    assert spy.count("verify") == 2
    assert all(hashed != legacy for _, hashed in spy.calls)


# --- SEC-PW-04: no composition rules -----------------------------------------------------


@pytest.mark.parametrize(
    "password", [PASSPHRASE, "zzzzzzzzzzzzzzzzzzzzzzzz", "plainlowercasewords"]
)
def test_password_no_composition_rules_sec_pw_04(policy: PasswordPolicy, password: str) -> None:
    assert password not in default_blocklist()
    policy.check(password)


# --- SEC-PW-05: blocklist and breach checker ---------------------------------------------


def test_password_bundled_list_rejected_under_default_policy_sec_pw_05(
    policy: PasswordPolicy,
) -> None:
    long_entries = [entry for entry in bundled_entries() if len(entry) >= 15][:5]
    assert len(long_entries) == 5
    for entry in long_entries:
        for candidate in (entry, entry.upper()):
            with pytest.raises(PasswordTooCommon) as info:
                policy.check(candidate)
            assert info.value.code == "password_too_common"
            assert "common" in info.value.detail


@pytest.mark.parametrize("password", ["password", "12345678", "baseball", "Football", "ILOVEYOU"])
def test_password_common_rejected_with_min_8_sec_pw_05(password: str) -> None:
    policy = PasswordPolicy.from_settings(Settings.for_tests(password_min_length=8))
    with pytest.raises(PasswordTooCommon) as info:
        policy.check(password)
    assert info.value.code == "password_too_common"
    assert info.value.to_dict()["reason"] == "blocklist"


def test_password_equal_to_email_rejected_sec_pw_05(policy: PasswordPolicy) -> None:
    email = "Alice.Longname.X@Example.com"
    for password in ("alice.longname.x@example.COM", "ALICE.LONGNAME.X"):
        with pytest.raises(PasswordTooCommon) as info:
            policy.check(password, email=email)
        assert info.value.to_dict()["reason"] == "email"
    policy.check("ALICE.LONGNAME.X")  # no email given
    policy.check("alice.longname.x and more", email=email)


def test_password_breached_rejected_sec_pw_05() -> None:
    checker = FakeBreachChecker(True)
    policy = PasswordPolicy.from_settings(Settings.for_tests(), breach_checker=checker)
    with pytest.raises(PasswordBreached) as info:
        policy.check(PASSPHRASE)
    assert info.value.code == "password_breached"
    assert checker.seen == [PASSPHRASE]


def test_password_breach_checker_gets_nfkc_form_sec_pw_12() -> None:
    checker = FakeBreachChecker(False)
    policy = PasswordPolicy(15, 1024, default_blocklist(), checker)
    policy.check("cafe\u0301 au lait, s'il vous plait")
    assert checker.seen == ["café au lait, s'il vous plait"]


def test_password_breach_checker_failure_is_fail_open(caplog: pytest.LogCaptureFixture) -> None:
    """Documented choice: an unavailable breach service logs a warning and accepts."""
    secret_marker = "CANARY-PW-breach-checker-123"
    checker = FakeBreachChecker(ConnectionError(f"boom {secret_marker}"))
    policy = PasswordPolicy(15, 1024, default_blocklist(), checker)
    with caplog.at_level(logging.WARNING, logger="usermgmt.security.passwords"):
        policy.check(secret_marker)
    assert checker.seen == [secret_marker]
    assert "ConnectionError" in caplog.text
    assert secret_marker not in caplog.text


def test_password_policy_check_order(policy: PasswordPolicy) -> None:
    """Too long wins over everything; too short over too common."""
    with pytest.raises(PasswordTooLong):
        PasswordPolicy(8, 64, default_blocklist(), FakeBreachChecker(True)).check("password" * 9)
    with pytest.raises(PasswordTooShort):
        policy.check("password")
    assert issubclass(PasswordTooCommon, PasswordPolicyError)


# --- SEC-PW-09/10: storage parameters and rehash -----------------------------------------

_PHC = re.compile(r"\$argon2id\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$[^$]+\$[^$]+")


def test_password_hash_default_parameters_sec_pw_09() -> None:
    defaults = {
        name: Settings.model_fields[name].default
        for name in (
            "password_argon2_memory_kib",
            "password_argon2_time_cost",
            "password_argon2_parallelism",
        )
    }
    hasher = PasslibHasher.from_settings(Settings.for_tests(**defaults))
    hashed = hasher.hash(PASSPHRASE)
    match = _PHC.fullmatch(hashed)
    assert match is not None, hashed
    memory, time_cost, _ = (int(g) for g in match.groups())
    assert memory >= 19456
    assert time_cost >= 2
    assert not hasher.needs_rehash(hashed)


def test_password_hash_unique_salt_sec_pw_09(hasher: PasslibHasher) -> None:
    first, second = hasher.hash(PASSPHRASE), hasher.hash(PASSPHRASE)
    assert first != second
    assert first.split("$")[4] != second.split("$")[4]  # the salts
    assert hasher.verify(PASSPHRASE, first)
    assert hasher.verify(PASSPHRASE, second)


def test_password_needs_rehash_sec_pw_10(hasher: PasslibHasher) -> None:
    legacy = bcrypt.hashpw(PASSPHRASE.encode(), bcrypt.gensalt(rounds=4)).decode()
    low_memory = PasslibHasher(Argon2Parameters(512, 1, 1)).hash(PASSPHRASE)
    other_time = PasslibHasher(Argon2Parameters(1024, 2, 1)).hash(PASSPHRASE)
    other_lanes = PasslibHasher(Argon2Parameters(1024, 1, 2)).hash(PASSPHRASE)
    current = hasher.hash(PASSPHRASE)

    for outdated in (legacy, low_memory, other_time, other_lanes):
        assert hasher.verify(PASSPHRASE, outdated), outdated
        assert hasher.needs_rehash(outdated), outdated
    assert not hasher.needs_rehash(current)
    assert hasher.needs_rehash("not a hash")
    assert hasher.needs_rehash(current.replace("$argon2id$", "$argon2i$"))


@pytest.mark.parametrize(
    "hashed",
    [
        "",
        "garbage",
        "$argon2id$",
        "$argon2id$v=19$m=1024,t=1,p=1$xx$yy",
        "$argon2id$v=19$m=abc,t=1,p=1$c29tZXNhbHQ$aGFzaA",
        "$2b$04$short",
        "$2b$04$" + "!" * 53,
        "$1$abc$def",
        "pbkdf2_sha256$600000$salt$hash",
        "\x00\xff",
    ],
)
def test_password_verify_malformed_hash_returns_false(
    hasher: PasslibHasher, spy: SpyContext, hashed: str
) -> None:
    assert hasher.verify(PASSPHRASE, hashed) is False
    # Still costs exactly one verification (against the dummy hash): SEC-AU-02.
    assert spy.count("verify") == 1
    assert spy.count("hash") == 0


# --- SEC-PW-11: upper bound before any work ----------------------------------------------


def test_password_1mb_rejected_before_hashing_sec_pw_11(
    policy: PasswordPolicy, hasher: PasslibHasher, spy: SpyContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    huge = "a" * 1_000_000
    normalized: list[str] = []
    real_normalize = unicodedata.normalize
    monkeypatch.setattr(
        passwords.unicodedata,
        "normalize",
        lambda form, text: normalized.append(text) or real_normalize(form, text),
    )
    checker = FakeBreachChecker(False)
    policy = PasswordPolicy(policy.min_length, policy.max_length, policy.blocklist, checker)

    def register(password: str) -> str:
        policy.check(password)
        return hasher.hash(password)

    started = time.perf_counter()
    with pytest.raises(PasswordTooLong) as info:
        register(huge)
    with pytest.raises(PasswordTooLong):
        policy.check_length_only(huge)
    elapsed = time.perf_counter() - started

    assert info.value.code == "password_too_long"
    assert "at most 1024 characters" in info.value.detail
    assert spy.calls == []
    assert normalized == []
    assert checker.seen == []
    assert elapsed < 0.05


def test_password_check_length_only_boundary_sec_pw_11(policy: PasswordPolicy) -> None:
    policy.check_length_only("x" * 1024)
    with pytest.raises(PasswordTooLong):
        policy.check_length_only("x" * 1025)


# --- SEC-PW-12: Unicode normalisation ----------------------------------------------------


def test_password_nfc_and_nfd_both_verify_sec_pw_12(hasher: PasslibHasher) -> None:
    nfc = "caf\u00e9 au lait tous les matins"
    nfd = unicodedata.normalize("NFD", nfc)
    assert nfc != nfd
    assert hasher.verify(nfd, hasher.hash(nfc))
    assert hasher.verify(nfc, hasher.hash(nfd))
    # NFKC also folds compatibility forms (full-width letters).
    full_width = "".join(chr(ord(c) + 0xFEE0) for c in "caf")
    assert hasher.verify(full_width + "\u00e9 au lait tous les matins", hasher.hash(nfc))


# --- SEC-AU-02: dummy verification -------------------------------------------------------


def test_dummy_verify_costs_one_verification_sec_au_02(
    hasher: PasslibHasher, spy: SpyContext
) -> None:
    hasher.dummy_verify(PASSPHRASE)
    assert spy.count("verify") == 1
    assert spy.count("hash") == 0
    dummy_hash = spy.calls[0][1]
    assert dummy_hash is not None
    assert not hasher.needs_rehash(dummy_hash)  # same scheme and cost as real hashes

    spy.calls.clear()
    assert not hasher.verify(PASSPHRASE, hasher.hash("something else entirely"))
    assert spy.count("verify") == 1


def test_dummy_hash_never_computed_and_shared_across_threads_sec_au_02(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Concurrent failing logins each run one verification against the same dummy hash,
    and nothing is ever hashed for it (it is built, see dummy_argon2_hash)."""
    hasher = PasslibHasher(CHEAP)
    spy = SpyContext(hasher._context)
    monkeypatch.setattr(hasher, "_context", spy)
    barrier = threading.Barrier(8)

    def login() -> None:
        barrier.wait()
        hasher.dummy_verify(PASSPHRASE)

    threads = [threading.Thread(target=login) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert spy.count("hash") == 0
    assert spy.count("verify") == 8
    assert len({hashed for kind, hashed in spy.calls if kind == "verify"}) == 1


def test_argon2_parameters_validated() -> None:
    with pytest.raises(ConfigurationError):
        Argon2Parameters(memory_kib=8, time_cost=1, parallelism=2)
    with pytest.raises(ConfigurationError):
        Argon2Parameters(memory_kib=1024, time_cost=0, parallelism=1)
    settings = Settings.for_tests()
    params = Argon2Parameters.from_settings(settings)
    assert params == Argon2Parameters(1024, 1, 1)


def test_common_passwords_from_entries_used_by_policy() -> None:
    policy = PasswordPolicy(8, 64, CommonPasswords.from_entries(["Hunter2Hunter2"]))
    with pytest.raises(PasswordTooCommon):
        policy.check("hunter2HUNTER2")
    policy.check("password1234")  # not in this custom list
