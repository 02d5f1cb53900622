"""Key validation and the on-disk behaviour of LocalBlobStorage (the shared
behaviour is in the BlobStorage contract)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from usermgmt.backends.memory import LocalBlobStorage, MemoryBlobStorage, validate_blob_key
from usermgmt.errors import Conflict, ValidationError
from usermgmt.ports import BlobStorage

BAD_KEYS = [
    "",
    "../escape",
    "a/../../escape",
    "a/..",
    "/etc/passwd",
    "a\\b",
    "..\\escape",
    "a//b",
    "a/",
    "./a",
    "a/./b",
    "C:/windows",
    "a\x00b",
    ".usermgmt-meta/tmp/x",
]


@pytest.fixture(params=["memory", "local"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStorage:
    if request.param == "local":
        return LocalBlobStorage(tmp_path / "root")
    return MemoryBlobStorage()


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_keys_are_rejected(storage: BlobStorage, key: str) -> None:
    with pytest.raises(ValidationError):
        storage.put(key, b"x")
    assert storage.list() == []


@pytest.mark.parametrize("key", ["a", "org/2026/01/02/batch-1-9.jsonl.gz", "a.b/c..d/.hidden"])
def test_good_keys_are_accepted(key: str) -> None:
    assert validate_blob_key(key) == key


def test_local_reads_cannot_escape_the_root(tmp_path: Path) -> None:
    (tmp_path / "secret").write_bytes(b"top secret")
    storage = LocalBlobStorage(tmp_path / "root")
    with pytest.raises(ValidationError):
        storage.get("../secret")
    with pytest.raises(ValidationError):
        storage.head("../secret")


def test_local_layout_and_persistence(tmp_path: Path) -> None:
    root = tmp_path / "root"
    storage = LocalBlobStorage(root)
    info = storage.put("org/2026/a.jsonl.gz", b"payload", content_type="application/gzip")
    assert (root / "org" / "2026" / "a.jsonl.gz").read_bytes() == b"payload"
    assert list((root / ".usermgmt-meta" / "tmp").iterdir()) == []  # no temp file left
    reopened = LocalBlobStorage(root)
    assert reopened.head("org/2026/a.jsonl.gz") == info
    assert reopened.list() == [info]  # the metadata directory is not listed
    with pytest.raises(Conflict):
        reopened.put("org/2026/a.jsonl.gz", b"other")


def test_local_head_hashes_what_is_on_disk(tmp_path: Path) -> None:
    root = tmp_path / "root"
    storage = LocalBlobStorage(root)
    storage.put("k", b"original")
    (root / "k").write_bytes(b"corrupted")
    info = storage.head("k")
    assert info is not None
    assert info.sha256 == hashlib.sha256(b"corrupted").hexdigest()
    assert info.size == len(b"corrupted")


def test_local_lost_sidecar_falls_back_to_default_content_type(tmp_path: Path) -> None:
    root = tmp_path / "root"
    storage = LocalBlobStorage(root)
    storage.put("dir/k", b"data", content_type="text/plain")
    (root / ".usermgmt-meta" / "dir" / "k.json").unlink()
    info = storage.head("dir/k")
    assert info is not None
    assert info.content_type == "application/octet-stream"


def test_local_key_clashing_with_a_directory_is_a_conflict(tmp_path: Path) -> None:
    storage = LocalBlobStorage(tmp_path / "root")
    storage.put("a/b", b"1")
    with pytest.raises(Conflict):
        storage.put("a", b"2")
    storage.put("c", b"3")
    with pytest.raises(Conflict):
        storage.put("c/d", b"4")
    assert [i.key for i in storage.list()] == ["a/b", "c"]


def test_memory_storage_copies_the_bytes() -> None:
    storage = MemoryBlobStorage()
    data = bytearray(b"abc")
    storage.put("k", data)  # type: ignore[arg-type]  # a caller passing a mutable buffer
    data[0] = ord("z")
    assert storage.get("k") == b"abc"


def test_local_put_loses_cleanly_to_another_process(tmp_path: Path) -> None:
    """Another process creating the key between our existence check and our link
    must win: we neither overwrite its file nor report success."""
    root = tmp_path / "root"

    class Racing(LocalBlobStorage):
        def _write_temp(self, data: bytes) -> str:
            target = root / "k"
            if not target.exists():
                target.write_bytes(b"the other process")
            return super()._write_temp(data)

    storage = Racing(root)
    with pytest.raises(Conflict):
        storage.put("k", b"ours")
    assert storage.get("k") == b"the other process"
    assert list((root / ".usermgmt-meta" / "tmp").iterdir()) == []
    assert storage.put("k", b"the other process").size == len(b"the other process")
