"""Archival (copy → verify → delete) of a multi-day, multi-organization backlog on the
three stores, to memory and local storage; fault injection keeps every event exactly
once across database and archive; ``verify`` and ``export`` read the archive back."""

from __future__ import annotations

import gzip
import hashlib
import json
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.audit.conftest import (
    T0,
    Backlog,
    Tamper,
    all_db_events,
    append,
    archiver,
    hours,
    make_backlog,
)
from usermgmt.audit_chain import PLATFORM_STREAM, canonical_json, event_record, stream_of
from usermgmt.backends.memory import LocalBlobStorage, MemoryBlobStorage
from usermgmt.errors import BackendUnavailable, BlobExists
from usermgmt.ids import new_id
from usermgmt.ports import BlobInfo, BlobStorage, UnitOfWorkFactory
from usermgmt.services.archive import AuditArchiver, archive_key, read_archive_object

pytestmark = pytest.mark.sql


def archived_ids(storage: BlobStorage) -> list[Any]:
    return [
        e.id for info in storage.list("audit/") for e in read_archive_object(storage.get(info.key))
    ]


def assert_exactly_once(factory: UnitOfWorkFactory, storage: BlobStorage, backlog: Backlog) -> None:
    """Every event of the backlog is in the database or in a ledgered object, once."""
    in_db = [e.id for e in all_db_events(factory)]
    in_archive = []
    for stream in {stream_of(e.organization_id) for e in backlog.events}:
        with factory(read_only=True) as uow:
            for batch in uow.audit_archive.batches(stream):
                in_archive += [e.id for e in read_archive_object(storage.get(batch.key))]
    counts = Counter(in_db + in_archive)
    assert sorted(counts) == sorted(e.id for e in backlog.events)
    assert set(counts.values()) == {1}


@pytest.fixture(params=["memory", "local"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStorage:
    if request.param == "local":
        return LocalBlobStorage(tmp_path / "archive")
    return MemoryBlobStorage()


def test_backlog_is_archived_by_stream_and_day(
    uow_factory: UnitOfWorkFactory, storage: BlobStorage
) -> None:
    backlog = make_backlog(uow_factory)
    arch, _ = archiver(uow_factory, storage)
    report = arch.archive()
    assert report.problems == []
    old = [e for e in backlog.events if e.occurred_at < T0 + timedelta(days=10)]
    assert report.events == len(old) == 24
    org0, org1, org2 = (str(o) for o in backlog.orgs)
    assert sorted(report.keys) == sorted(
        [archive_key(org0, (T0 + timedelta(days=d)).date(), 4 * d + 1, 4 * d + 4) for d in range(3)]
        + [
            archive_key(org1, T0.date(), 1, 3),  # 01:00, 12:00, 23:00
            archive_key(org1, (T0 + timedelta(days=1)).date(), 4, 5),
            archive_key(org2, (T0 + timedelta(days=2)).date(), 1, 3),
            archive_key(PLATFORM_STREAM, T0.date(), 1, 2),
            archive_key(PLATFORM_STREAM, (T0 + timedelta(days=1)).date(), 3, 3),
            archive_key(PLATFORM_STREAM, (T0 + timedelta(days=2)).date(), 4, 4),
        ]
    )
    # what is left in the database: the two young events
    assert sorted(e.id for e in all_db_events(uow_factory)) == sorted(
        e.id for e in backlog.events if e not in old
    )
    assert_exactly_once(uow_factory, storage, backlog)
    # objects: gzip JSON Lines, canonical records, the ledger knows size and checksum
    with uow_factory(read_only=True) as uow:
        (first, *_) = uow.audit_archive.batches(org0)
    data = storage.get(first.key)
    assert (first.size, first.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    lines = gzip.decompress(data).decode().splitlines()
    assert [json.loads(line) for line in lines] == [event_record(e) for e in old[:4]]
    assert (first.first_seq, first.last_seq, first.event_count) == (1, 4, 4)
    assert (first.min_occurred_at, first.max_occurred_at) == (T0, T0 + timedelta(hours=18))
    # the chain still verifies across archive and database; a re-run does nothing
    verified = arch.verify()
    assert verified.problems == []
    assert (verified.archived_events, verified.database_events) == (24, 2)
    again = arch.archive()
    assert (again.events, again.batches, again.problems) == (0, 0, [])


def test_batches_are_bounded(uow_factory: UnitOfWorkFactory) -> None:
    org = new_id()
    events = append(uow_factory, org, hours(T0, 7, step=1))  # one day
    arch, _ = archiver(uow_factory, batch_size=3, page_size=2)
    report = arch.archive()
    assert [k.rsplit("/", 1)[1] for k in report.keys] == [
        "000000000001-000000000003.jsonl.gz",
        "000000000004-000000000006.jsonl.gz",
        "000000000007-000000000007.jsonl.gz",
    ]
    assert report.events == len(events)
    assert arch.verify().problems == []


def test_export_merges_archive_and_database_in_chain_order(uow_factory: UnitOfWorkFactory) -> None:
    backlog = make_backlog(uow_factory)
    arch, _ = archiver(uow_factory)
    arch.archive()
    org0 = backlog.orgs[0]
    mine = [e for e in backlog.events if e.organization_id == org0]
    assert list(arch.export(str(org0))) == [event_record(e) for e in mine]
    since, until = T0 + timedelta(days=1), T0 + timedelta(days=95, hours=1)
    window = [e for e in mine if since <= e.occurred_at < until]
    assert [r["seq"] for r in arch.export(str(org0), since=since, until=until)] == [
        e.chain_seq for e in window
    ]
    assert len(window) == 9  # days 1 and 2 from the archive, one young event from the db
    platform = list(arch.export(PLATFORM_STREAM))
    assert [r["action"] for r in platform] == ["user.login"] * 4
    assert list(arch.export(str(new_id()))) == []


def test_dry_run_changes_nothing(uow_factory: UnitOfWorkFactory) -> None:
    backlog = make_backlog(uow_factory)
    storage = MemoryBlobStorage()
    arch, _ = archiver(uow_factory, storage)
    progress: list[tuple[int, int]] = []
    report = arch.archive(dry_run=True, progress=lambda done, total: progress.append((done, total)))
    assert (report.events, report.batches) == (24, 9)
    assert storage.list() == []
    assert len(all_db_events(uow_factory)) == len(backlog.events)
    assert progress[0] == (0, 24)
    assert progress[-1] == (24, 24)


# --- fault injection -----------------------------------------------------------------------


class FaultyStorage:
    """A real storage with one injected fault; ``armed`` faults fire once."""

    def __init__(self, inner: BlobStorage, fault: str) -> None:
        self.inner = inner
        self.fault = fault
        self.armed = True

    def _fire(self) -> bool:
        fire, self.armed = self.armed, False
        return fire

    def put(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        checksum_sha256: str | None = None,
    ) -> BlobInfo:
        if self.fault == "upload-fails" and self._fire():
            raise BackendUnavailable("S3 is down")
        if self.fault == "corrupted-in-transit" and self._fire():
            data = data[:-1] + bytes([data[-1] ^ 1])  # the checksum must catch it
        info = self.inner.put(key, data, content_type=content_type, checksum_sha256=checksum_sha256)
        if self.fault == "crash-after-upload" and self._fire():
            raise KeyboardInterrupt  # the process dies between upload and delete
        return info

    def head(self, key: str) -> BlobInfo | None:
        info = self.inner.head(key)
        if info is not None and self.fault == "head-wrong-size" and self._fire():
            return BlobInfo(info.key, info.size - 1, info.sha256, info.content_type)
        if info is not None and self.fault == "head-wrong-checksum" and self._fire():
            return BlobInfo(info.key, info.size, "0" * 64, info.content_type)
        if self.fault == "head-missing" and self._fire():
            return None
        return info

    def get(self, key: str) -> bytes:
        return self.inner.get(key)

    def list(self, prefix: str = "") -> list[BlobInfo]:
        return self.inner.list(prefix)


@pytest.mark.parametrize(
    "fault",
    [
        "upload-fails",
        "corrupted-in-transit",
        "head-wrong-size",
        "head-wrong-checksum",
        "head-missing",
        "crash-after-upload",
    ],
)
def test_a_failed_batch_keeps_its_rows_and_a_rerun_completes(
    uow_factory: UnitOfWorkFactory, fault: str
) -> None:
    backlog = make_backlog(uow_factory)
    inner = MemoryBlobStorage()
    faulty = FaultyStorage(inner, fault)
    arch, clock = archiver(uow_factory, faulty)
    if fault == "crash-after-upload":
        with pytest.raises(KeyboardInterrupt):
            arch.archive()
        assert len(inner.list()) == 1  # uploaded, but nothing recorded or deleted
    else:
        report = arch.archive()
        assert len(report.problems) == 1  # the stream that failed stops; others go on
        assert report.events == 24 - _first_batch_size(report.problems[0], backlog)
    assert_exactly_once(uow_factory, inner, backlog)
    rerun = AuditArchiver(uow_factory, inner, clock, after_days=90).archive()
    assert rerun.problems == []
    assert_exactly_once(uow_factory, inner, backlog)
    assert len(all_db_events(uow_factory)) == 2
    assert AuditArchiver(uow_factory, inner, clock, after_days=90).verify().problems == []
    ids = archived_ids(inner)
    assert len(ids) == len(set(ids)) == 24  # no orphan copy: the rerun reused the key


def _first_batch_size(problem: str, backlog: Backlog) -> int:
    """The old events of the stream named in ``problem`` (all kept in the database)."""
    stream = problem.split()[1].rstrip(":")
    return sum(
        1
        for e in backlog.events
        if stream_of(e.organization_id) == stream and e.occurred_at < T0 + timedelta(days=10)
    )


def test_different_bytes_under_the_key_are_refused(uow_factory: UnitOfWorkFactory) -> None:
    org = new_id()
    events = append(uow_factory, org, hours(T0, 2))
    storage = MemoryBlobStorage()
    key = archive_key(str(org), T0.date(), 1, 2)
    storage.put(key, b"someone else's object")
    arch, _ = archiver(uow_factory, storage)
    report = arch.archive()
    (problem,) = report.problems
    assert key in problem
    assert "refusing" in problem
    assert storage.get(key) == b"someone else's object"
    assert [e.id for e in all_db_events(uow_factory)] == [e.id for e in events[::-1]]
    with pytest.raises(BlobExists):
        storage.put(key, b"overwrite")


def test_an_object_with_the_same_lines_compressed_differently_is_kept(
    uow_factory: UnitOfWorkFactory,
) -> None:
    """A run that failed after its upload, then an upgrade that compresses differently
    (another gzip level or zlib build): the object is recognised by its content, kept,
    and recorded in the ledger with its own size and checksum."""
    org = new_id()
    events = append(uow_factory, org, hours(T0, 3))
    key = archive_key(str(org), T0.date(), 1, 3)
    lines = "".join(canonical_json(event_record(e)) + "\n" for e in events).encode()
    earlier = gzip.compress(lines, compresslevel=9, mtime=0)
    storage = MemoryBlobStorage()
    storage.put(key, earlier)
    arch, _ = archiver(uow_factory, storage)
    report = arch.archive()
    assert report.problems == []
    assert report.events == 3
    assert storage.get(key) == earlier
    assert all_db_events(uow_factory) == []
    with uow_factory(read_only=True) as uow:
        (batch,) = uow.audit_archive.batches(str(org))
    assert (batch.key, batch.size) == (key, len(earlier))
    assert batch.sha256 == hashlib.sha256(earlier).hexdigest()
    assert arch.verify().problems == []


def test_a_broken_chain_is_not_archived(uow_factory: UnitOfWorkFactory) -> None:
    org = new_id()
    events = append(uow_factory, org, hours(T0, 4))
    Tamper(uow_factory).modify(events[2], "forged")
    arch, _ = archiver(uow_factory)
    report = arch.archive()
    (problem,) = report.problems
    assert "broken chain" in problem
    assert "seq 3" in problem
    assert report.events == 0
    assert len(all_db_events(uow_factory)) == 4


# --- verify across the archive ---------------------------------------------------------------


def _rewrite(storage: LocalBlobStorage, key: str, change: Any) -> None:
    path = storage.root.joinpath(*key.split("/"))
    lines = [json.loads(x) for x in gzip.decompress(path.read_bytes()).decode().splitlines()]
    change(lines)
    body = "".join(json.dumps(x) + "\n" for x in lines).encode()
    path.chmod(0o644)
    path.write_bytes(gzip.compress(body))


@pytest.mark.parametrize("tampering", ["modified", "deleted", "reordered", "object-deleted"])
def test_verify_detects_tampering_in_an_archived_object(
    uow_factory: UnitOfWorkFactory, tmp_path: Path, tampering: str
) -> None:
    org = new_id()
    append(uow_factory, org, hours(T0, 8))  # two days: two objects
    storage = LocalBlobStorage(tmp_path / "archive")
    arch, _ = archiver(uow_factory, storage)
    assert arch.archive().batches == 2
    key = archive_key(str(org), T0.date(), 1, 4)
    if tampering == "modified":
        _rewrite(storage, key, lambda lines: lines[1].update(action="forged"))
        expected = f"stream {org} seq 2: event"
    elif tampering == "deleted":
        _rewrite(storage, key, lambda lines: lines.pop(1))
        expected = f"stream {org} seq 2: missing (seq 2 deleted or moved); next is seq 3"
    elif tampering == "reordered":
        _rewrite(storage, key, lambda lines: lines.insert(1, lines.pop(2)))
        expected = f"stream {org} seq 2: missing (seq 2 deleted or moved); next is seq 3"
    else:
        storage.root.joinpath(*key.split("/")).unlink()
        expected = f"stream {org} archive {key}: object missing (seq 1..4)"
    (problem,) = arch.verify().problems
    assert problem.startswith(expected), problem


def test_export_while_the_archiver_runs_misses_nothing(uow_factory: UnitOfWorkFactory) -> None:
    backlog = make_backlog(uow_factory)
    org0 = str(backlog.orgs[0])
    reader, _ = archiver(uow_factory, page_size=3)
    exporting = reader.export(org0)
    first = [next(exporting)["seq"]]  # the first database page (seq 1..3) is in memory
    archiver(uow_factory, reader.storage)[0].archive()  # archives seq 1..12 meanwhile
    assert first + [r["seq"] for r in exporting] == list(range(1, 15))


def test_two_archivers_at_once_archive_each_event_once(uow_factory: UnitOfWorkFactory) -> None:
    import threading

    backlog = make_backlog(uow_factory)
    storage = MemoryBlobStorage()
    barrier = threading.Barrier(2)
    reports: list[Any] = []

    def run() -> None:
        arch = archiver(uow_factory, storage)[0]
        barrier.wait()
        reports.append(arch.archive())

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r.events for r in reports) >= 24  # the loser may have counted a lost race
    for report in reports:
        assert all(
            "recorded already" in p or "expected to delete" in p or "meanwhile" in p
            for p in report.problems
        ), report.problems
    final = archiver(uow_factory, storage)[0]
    assert final.archive().problems == []
    assert_exactly_once(uow_factory, storage, backlog)
    assert len(all_db_events(uow_factory)) == 2
    assert final.verify().problems == []
