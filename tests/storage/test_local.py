"""The local directory backend: keys that try to escape the root, atomic write-once
files across processes, sidecars and streaming reads (the shared behaviour is in
tests/storage/test_contracts.py)."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from pathlib import Path

import pytest

from usermgmt import Settings
from usermgmt.backends import build_storage
from usermgmt.backends.storage.local import LocalBlobStorage
from usermgmt.errors import BlobExists, BlobIntegrityError, NotFound, ValidationError

TRAVERSALS = [
    "../outside",
    "a/../../outside",
    "/etc/passwd",
    "//server/share",
    "..\\outside",
    "a/..",
    "./a",
    "a//b",
    "C:/windows/x",
    "a\x00b",
    ".usermgmt-meta/tmp/x",
]


def _files(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


@pytest.mark.parametrize("key", TRAVERSALS)
def test_path_traversal_is_refused_everywhere(tmp_path: Path, key: str) -> None:
    storage = LocalBlobStorage(tmp_path / "root")
    for call in (
        lambda: storage.put(key, b"x"),
        lambda: storage.head(key),
        lambda: storage.get(key),
        lambda: list(storage.iter_chunks(key)),
    ):
        with pytest.raises(ValidationError):
            call()
    assert _files(tmp_path) == []  # nothing written, inside or outside the root


def test_a_symlink_cannot_lead_a_key_outside_the_root(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"not yours")
    root = tmp_path / "root"
    storage = LocalBlobStorage(root)
    (root / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ValidationError, match="outside"):
        storage.put("link/new", b"escaped")
    with pytest.raises(ValidationError, match="outside"):
        storage.get("link/secret")
    with pytest.raises(ValidationError, match="outside"):
        storage.head("link/secret")
    assert _files(outside) == ["secret"]


def test_put_writes_the_file_and_a_sidecar_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    root = tmp_path / "root"
    storage = LocalBlobStorage(root)
    data = b"line\n" * 100
    info = storage.put("org/2026/01/a.jsonl.gz", data, content_type="application/gzip")
    assert (root / "org/2026/01/a.jsonl.gz").read_bytes() == data
    sidecar = json.loads((root / ".usermgmt-meta/org/2026/01/a.jsonl.gz.json").read_text())
    assert sidecar == {"content_type": "application/gzip", "sha256": info.sha256, "size": 500}
    with pytest.raises(BlobExists):
        storage.put("org/2026/01/a.jsonl.gz", b"other")
    with pytest.raises(BlobIntegrityError):
        storage.put("org/b", data, checksum_sha256=hashlib.sha256(b"x").hexdigest())
    assert list((root / ".usermgmt-meta/tmp").iterdir()) == []
    assert not (root / "org/b").exists()
    assert LocalBlobStorage(root).head("org/2026/01/a.jsonl.gz") == info  # survives a restart


def test_large_objects_are_hashed_and_streamed_in_chunks(tmp_path: Path) -> None:
    storage = LocalBlobStorage(tmp_path / "root")
    data = os.urandom(3 * 1024 * 1024 + 17)
    info = storage.put("big", data)
    assert storage.head("big") == info
    chunks = list(storage.iter_chunks("big", chunk_size=1024 * 1024))
    assert [len(c) for c in chunks] == [1024 * 1024] * 3 + [17]
    assert b"".join(chunks) == data
    with pytest.raises(NotFound):
        storage.iter_chunks("absent")


def _race(root: str, index: int, barrier: object, results: object) -> None:
    storage = LocalBlobStorage(root)
    barrier.wait()  # type: ignore[attr-defined]
    try:
        storage.put("race/key", f"process-{index}".encode() * 1000)
        results.put(("won", index))  # type: ignore[attr-defined]
    except BlobExists:
        results.put(("lost", index))  # type: ignore[attr-defined]


def test_processes_racing_on_one_key_have_exactly_one_winner(tmp_path: Path) -> None:
    root = tmp_path / "root"
    LocalBlobStorage(root)
    context = multiprocessing.get_context("spawn")  # no fork of a threaded process
    barrier = context.Barrier(4, timeout=240)
    results = context.Queue()
    processes = [
        context.Process(target=_race, args=(str(root), i, barrier, results)) for i in range(4)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=300)
        assert process.exitcode == 0
    outcomes = [results.get(timeout=5) for _ in processes]
    winners = [index for outcome, index in outcomes if outcome == "won"]
    assert len(winners) == 1, outcomes
    stored = LocalBlobStorage(root).get("race/key")
    assert stored == f"process-{winners[0]}".encode() * 1000
    assert list((root / ".usermgmt-meta/tmp").iterdir()) == []


def test_settings_select_the_local_backend(tmp_path: Path) -> None:
    settings = Settings(
        _env_file=None,
        environment="test",
        storage_backend="local",
        storage_local_path=str(tmp_path / "archive"),
    )
    storage = build_storage(settings)
    assert isinstance(storage, LocalBlobStorage)
    storage.put("k", b"v")
    assert (tmp_path / "archive" / "k").read_bytes() == b"v"
