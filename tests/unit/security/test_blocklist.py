"""The bundled common-password list (SEC-PW-05)."""

from __future__ import annotations

import gzip
import importlib.util
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from usermgmt.security import blocklist
from usermgmt.security.blocklist import CommonPasswords, default_blocklist

ROOT = Path(__file__).resolve().parents[3]
DATA = ROOT / "usermgmt" / "security" / "data"


def test_bundled_list_loads_and_matches_case_insensitively_sec_pw_05() -> None:
    common = CommonPasswords()
    assert "password" in common
    assert "PassWord" in common
    full_width = "".join(chr(ord(c) + 0xFEE0) for c in "PASSWORD")
    assert full_width in common  # full-width forms fold under NFKC
    assert "1qaz2wsx3edc4rfv" in common
    assert "quiet lantern meadow orbit" not in common
    assert 10_000 < len(common) <= 30_000
    assert 12345678 not in common


def test_bundled_list_drops_entries_shorter_than_8() -> None:
    entries = gzip.decompress((DATA / "common-passwords.txt.gz").read_bytes()).decode().split()
    assert min(len(entry) for entry in entries) >= 8
    assert len(entries) == len(set(entries))
    assert all(entry == entry.casefold() for entry in entries)
    assert "123456" not in CommonPasswords()  # 6 characters: left to the length rule


def test_default_blocklist_is_a_singleton() -> None:
    assert default_blocklist() is default_blocklist()


def test_bundled_list_loaded_once_across_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[int] = []
    real_read = blocklist._read_bundled

    def counting_read() -> list[str]:
        reads.append(1)
        return real_read()

    monkeypatch.setattr(blocklist, "_read_bundled", counting_read)
    common = CommonPasswords()
    assert repr(common) == "<CommonPasswords unloaded>"
    barrier = threading.Barrier(8)
    results: list[bool] = []

    def lookup() -> None:
        barrier.wait()
        results.append("password" in common)

    threads = [threading.Thread(target=lookup) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [True] * 8
    assert reads == [1]


def test_from_entries_folds_entries() -> None:
    common = CommonPasswords.from_entries(["Hunter2Hunter2", ""])
    assert "HUNTER2hunter2" in common
    assert len(common) == 1


def test_runtime_does_not_import_zxcvbn() -> None:
    code = (
        "import sys\n"
        "from usermgmt.security.blocklist import default_blocklist\n"
        "assert 'password' in default_blocklist()\n"
        "assert 'zxcvbn' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)  # noqa: S603


def test_data_file_is_reproducible_from_zxcvbn() -> None:
    spec = importlib.util.spec_from_file_location(
        "build_blocklist", ROOT / "scripts" / "build_blocklist.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.build(module.source_entries()) == (DATA / "common-passwords.txt.gz").read_bytes()


def test_notice_names_source_and_licence() -> None:
    notice = (DATA / "NOTICE").read_text()
    assert "zxcvbn" in notice
    assert "MIT" in notice
    assert "Permission is hereby granted" in notice
