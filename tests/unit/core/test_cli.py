"""The ``usermgmt`` command line: one readable line on error, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import usermgmt
from usermgmt.cli import main

REPO_ROOT = Path(usermgmt.__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def core_cli_cwd(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # Settings() also reads ./.env: keep it out of the tests


def test_check_config_valid(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], core_secrets: Any
) -> None:
    core_secrets()
    monkeypatch.setenv("ENVIRONMENT", "test")
    assert main(["check-config"]) == 0
    out, err = capsys.readouterr()
    assert "valid" in out
    assert "environment=test" in out
    assert err == ""


def test_check_config_reads_dot_env(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], core_secrets: Any
) -> None:
    (tmp_path / ".env").write_text("ENVIRONMENT=test\n", encoding="utf-8")
    core_secrets()
    assert main(["check-config"]) == 0
    assert "environment=test" in capsys.readouterr().out


def _assert_one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("usermgmt: error: ")
    assert "Traceback" not in err
    return lines[0]


def test_check_config_production_without_secrets(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NODE_ENV", "production")
    assert main(["check-config"]) == 2
    out, err = capsys.readouterr()
    line = _assert_one_error_line(err)
    assert "JWT_SECRET" in line
    assert out == ""


def test_check_config_never_prints_the_secret(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], core_secrets: Any
) -> None:
    core_secrets()
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("JWT_SECRET", "Short-Leaky-Secret-42")
    assert main(["check-config"]) == 2
    out, err = capsys.readouterr()
    assert "JWT_SECRET" in _assert_one_error_line(err)
    assert "Short-Leaky-Secret-42" not in out + err


def test_several_problems_still_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LOG_LEVEL", "verbose")
    monkeypatch.setenv("TRUSTED_PROXIES", "not-a-cidr")
    monkeypatch.setenv("ENVIRONMENT", "test")
    assert main(["check-config"]) == 2
    line = _assert_one_error_line(capsys.readouterr().err)
    assert "LOG_LEVEL" in line
    assert "TRUSTED_PROXIES" in line


def test_version_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert usermgmt.__version__ in capsys.readouterr().out


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert "usage" in capsys.readouterr().err


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k.upper() not in {"PYTHONPATH", *env}}
    clean["PYTHONPATH"] = str(REPO_ROOT)
    clean.update(env)
    return subprocess.run(  # noqa: S603 - fixed arguments
        [sys.executable, "-m", "usermgmt", *args],
        capture_output=True,
        text=True,
        env=clean,
        timeout=60,
        check=False,
    )


def test_python_m_usermgmt_version() -> None:
    result = _run("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"usermgmt {usermgmt.__version__}"


def test_python_m_usermgmt_error_exit_code() -> None:
    result = _run("check-config", NODE_ENV="production")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    _assert_one_error_line(result.stderr)
