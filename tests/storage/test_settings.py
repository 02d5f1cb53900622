"""Storage settings: STORAGE_BACKEND, the S3 bucket, Object Lock mode and retention, prefix."""

from __future__ import annotations

from typing import Any

import pytest

from usermgmt import Settings
from usermgmt.backends import build_storage
from usermgmt.backends.memory import MemoryBlobStorage
from usermgmt.errors import ConfigurationError


def _settings(**values: Any) -> Settings:
    return Settings(_env_file=None, environment="test", **values)


def test_defaults() -> None:
    settings = _settings()
    assert settings.storage_backend == "local"
    assert settings.aws_s3_object_lock_mode == "none"
    assert settings.aws_s3_object_lock_retention_days is None
    assert settings.aws_s3_prefix == ""
    assert _settings(aws_s3_bucket="b").storage_backend == "s3"  # a bucket selects S3


def test_s3_without_a_bucket_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="STORAGE_BACKEND=s3 needs AWS_S3_BUCKET"):
        _settings(storage_backend="s3")


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="STORAGE_BACKEND"):
        _settings(storage_backend="gcs")


@pytest.mark.parametrize(
    ("given", "expected"),
    [("governance", "GOVERNANCE"), ("COMPLIANCE", "COMPLIANCE"), (" Compliance ", "COMPLIANCE")],
)
def test_lock_mode_is_case_insensitive(given: str, expected: str) -> None:
    settings = _settings(aws_s3_object_lock_mode=given, aws_s3_object_lock_retention_days=30)
    assert settings.aws_s3_object_lock_mode == expected


@pytest.mark.parametrize("mode", ["none", "NONE", ""])
def test_lock_mode_none(mode: str) -> None:
    assert _settings(aws_s3_object_lock_mode=mode).aws_s3_object_lock_mode == "none"


@pytest.mark.parametrize("mode", ["LEGAL_HOLD", "strict", "governance-mode"])
def test_unknown_lock_modes_are_refused(mode: str) -> None:
    with pytest.raises(ConfigurationError, match="AWS_S3_OBJECT_LOCK_MODE"):
        _settings(aws_s3_object_lock_mode=mode, aws_s3_object_lock_retention_days=1)


def test_mode_and_retention_go_together() -> None:
    with pytest.raises(ConfigurationError, match="must be set together"):
        _settings(aws_s3_object_lock_mode="COMPLIANCE")
    with pytest.raises(ConfigurationError, match="must be set together"):
        _settings(aws_s3_object_lock_retention_days=30)


@pytest.mark.parametrize("days", [0, -1, 36501])
def test_retention_days_bounds(days: int) -> None:
    with pytest.raises(ConfigurationError, match="AWS_S3_OBJECT_LOCK_RETENTION_DAYS"):
        _settings(aws_s3_object_lock_mode="GOVERNANCE", aws_s3_object_lock_retention_days=days)


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORAGE_BACKEND", "s3")
    monkeypatch.setenv("AWS_S3_BUCKET", "audit")
    monkeypatch.setenv("AWS_S3_OBJECT_LOCK_MODE", "compliance")
    monkeypatch.setenv("AWS_S3_OBJECT_LOCK_RETENTION_DAYS", "400")
    monkeypatch.setenv("AWS_S3_PREFIX", "prod/audit/")
    settings = Settings(_env_file=None, environment="test")
    assert settings.aws_s3_object_lock_mode == "COMPLIANCE"
    assert settings.aws_s3_object_lock_retention_days == 400
    assert settings.aws_s3_prefix == "prod/audit"


@pytest.mark.parametrize("prefix", ["/abs", "a/../b", "..", "a//b", "a\\b", "./a"])
def test_bad_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(ConfigurationError, match="AWS_S3_PREFIX"):
        _settings(aws_s3_prefix=prefix)


def test_memory_backend() -> None:
    assert isinstance(build_storage(_settings(storage_backend="memory")), MemoryBlobStorage)
