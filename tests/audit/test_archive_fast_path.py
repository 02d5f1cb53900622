"""The archiver's PostgreSQL fast path (``audit_lines``): PostgreSQL writes each event's
canonical line but ``metadata``, Python completes and hashes it. On a real PostgreSQL:
the parts give exactly the bytes of ``canonical_json(event_record(e))`` for tricky
events; events whose line PostgreSQL cannot reproduce are still archived canonically (the
reference path); tampered events are refused; threads and gzip levels change nothing
in what is archived."""

from __future__ import annotations

import base64
import gzip
import hashlib
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from uuid import UUID

import pytest

from tests.audit.conftest import T0, Tamper, all_db_events, append, archiver, hours, make_backlog
from tests.sql.conftest import truncate_all
from usermgmt.audit_chain import canonical_json, event_record, metadata_json, stream_of
from usermgmt.backends.memory import MemoryBlobStorage, MemoryUnitOfWorkFactory
from usermgmt.backends.sqlalchemy import SqlUnitOfWorkFactory
from usermgmt.clock import FakeClock
from usermgmt.errors import ConfigurationError
from usermgmt.ids import new_id
from usermgmt.models import AuditEvent
from usermgmt.ports import UnitOfWorkFactory
from usermgmt.services.archive import AuditArchiver
from usermgmt.testing.contracts import transact

pytestmark = pytest.mark.sql

#: Every ASCII character PostgreSQL text can hold (all but NUL), so every escape.
ALL_ASCII = "".join(chr(c) for c in range(1, 128))
UNICODE = "é ü ß 中文 \u2028\u2029 \ufeff \u00a0 \U0001f600 \U0010ffff ﬁ"


@pytest.fixture
def pg_factory(pg_contracts_url: str) -> Iterator[SqlUnitOfWorkFactory]:
    truncate_all(pg_contracts_url)
    factory = SqlUnitOfWorkFactory(pg_contracts_url)
    yield factory
    factory.dispose()


def add(factory: UnitOfWorkFactory, organization_id: UUID | None, **fields: Any) -> AuditEvent:
    values: dict[str, Any] = {
        "id": new_id(),
        "occurred_at": T0 + timedelta(hours=1, microseconds=123),
        "action": "member.added",
        "organization_id": organization_id,
        "actor_user_id": new_id(),
        "outcome": "success",
        "target_type": "user",
        "target_id": "t",
        "ip": "203.0.113.7",
        "user_agent": "pytest",
        "request_id": "req",
        "metadata": {},
    }
    values.update(fields)
    event = AuditEvent(**values)
    chained: AuditEvent = transact(factory, lambda uow: uow.audit.add(event))
    return chained


def tricky_events(factory: UnitOfWorkFactory, org: UUID | None) -> list[AuditEvent]:
    """Events PostgreSQL must write exactly as Python does, in chain order."""
    return [
        add(factory, org, target_id=ALL_ASCII, user_agent=ALL_ASCII, request_id=ALL_ASCII),
        add(
            factory,
            org,
            action='a"\\/\x01\x1f\x7fé😀',
            target_type='t"\\\n',
            ip=None,
            user_agent=UNICODE,
            request_id=None,
            target_id=None,
            actor_user_id=None,
        ),
        add(
            factory,
            org,
            occurred_at=T0 + timedelta(hours=2),  # microsecond 0: still six digits
            outcome="failure",
            metadata={
                "b": {"y": [1, 2.5, None, True, False, "x, y: z"], "a": {}},
                "a": [],
                "é": "ü",
                "😀": {"\u2028": ALL_ASCII},
                "Z": "",
                "email": "a@example.com",  # jsonb orders keys by length first
                "role": "admin",
            },
        ),
        add(
            factory,
            org,
            metadata={"f": 0.1, "g": -1.5, "h": 1e-07, "big": 10**30, "neg": -7, "zero": 0.0},
        ),
        add(factory, org, metadata={"nested": [[1, [2, {"k": "v, w"}]], {"deep": {"x": None}}]}),
        add(factory, org, occurred_at=T0 + timedelta(hours=3, microseconds=999_999)),
    ]


def bare(event: AuditEvent) -> str:
    record = event_record(event)
    del record["hash"]
    return canonical_json(record)


def parts_of(factory: SqlUnitOfWorkFactory, stream: str, last_seq: int) -> list[Any]:
    with factory(read_only=True) as uow:
        repo: Any = uow.audit_archive
        assert repo.builds_lines
        return [
            row for page in repo.line_parts(stream, after_seq=0, last_seq=last_seq) for row in page
        ]


def archived_lines(storage: MemoryBlobStorage) -> list[str]:
    return [
        line
        for info in sorted(storage.list("audit/"), key=lambda i: i.key)
        for line in gzip.decompress(storage.get(info.key)).decode().split("\n")[:-1]
    ]


@pytest.mark.parametrize("platform", [False, True], ids=["organization", "platform"])
def test_postgresql_writes_the_canonical_line(
    pg_factory: SqlUnitOfWorkFactory, platform: bool
) -> None:
    org = None if platform else new_id()
    events = tricky_events(pg_factory, org)
    rows = parts_of(pg_factory, stream_of(org), len(events))
    assert [row[4] for row in rows] == [e.chain_seq for e in events]
    for event, (head, middle, metadata, tail, _seq, prev_hash, hash_) in zip(
        events, rows, strict=True
    ):
        assert (prev_hash, hash_) == (event.prev_hash, event.hash)
        expected = bare(event)
        assert f"{head}{middle}{metadata_json(metadata)}{tail}" == expected
        assert hashlib.sha256(expected.encode()).hexdigest() == event.hash
        assert f'{head}"hash":"{hash_}",{middle}{metadata_json(metadata)}{tail}' == (
            canonical_json(event_record(event))
        )
    # and the archiver writes exactly these lines
    storage = MemoryBlobStorage()
    arch, _ = archiver(pg_factory, storage)
    report = arch.archive()
    assert (report.problems, report.events) == ([], len(events))
    assert archived_lines(storage) == [canonical_json(event_record(e)) for e in events]
    assert arch.verify().problems == []
    assert all_db_events(pg_factory) == []


class _WrongParts:
    """The repository of a unit of work, with the line parts of some events spoiled (as a
    database that writes JSON differently would): fault injection for the fallback."""

    def __init__(self, inner: Any, spoiled: set[int]) -> None:
        self._inner = inner
        self._spoiled = spoiled

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def line_parts(self, stream: str, **bounds: Any) -> Iterator[list[Any]]:
        for page in self._inner.line_parts(stream, **bounds):
            yield [
                (row[0].replace(":", ": "), *row[1:]) if row[4] in self._spoiled else row
                for row in page
            ]


class _SpoilingFactory:
    def __init__(self, inner: SqlUnitOfWorkFactory, spoiled: set[int]) -> None:
        self.inner = inner
        self.spoiled = spoiled

    def __call__(self, *, read_only: bool = False, replica: bool = False) -> Any:
        uow = self.inner(read_only=read_only, replica=replica)
        uow.audit_archive = _WrongParts(uow.audit_archive, self.spoiled)
        return uow

    def check(self) -> None:
        self.inner.check()


def test_lines_postgresql_gets_wrong_go_through_the_reference_path(
    pg_factory: SqlUnitOfWorkFactory,
) -> None:
    """A line that does not hash right is never archived as is: the reference check
    decides, and archives the canonical line of an intact event."""
    org = new_id()
    events = tricky_events(pg_factory, org)
    factory = _SpoilingFactory(pg_factory, {1, 3, len(events)})
    storage = MemoryBlobStorage()
    arch, _ = archiver(factory, storage)
    report = arch.archive()
    assert (report.problems, report.events) == ([], len(events))
    assert archived_lines(storage) == [canonical_json(event_record(e)) for e in events]
    assert arch.verify().problems == []


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("metadata", '{"n": 2}'),
        ("target_id", 'forged "quoted" \\ value'),
        ("occurred_at", "2026-01-01T01:00:00.000124+00:00"),
        ("prev_hash", "0" * 64),
        ("hash", "f" * 64),
    ],
)
def test_a_tampered_event_is_refused(
    pg_factory: SqlUnitOfWorkFactory, column: str, value: str
) -> None:
    org = new_id()
    events = append(pg_factory, org, hours(T0, 4, step=1))
    kind = {"metadata": "jsonb", "occurred_at": "timestamptz"}.get(column, "text")
    Tamper(pg_factory)._sql(
        f"UPDATE audit_logs SET {column} = CAST(:v AS {kind}) WHERE id = :id",  # noqa: S608
        v=value,
        id=events[1].id,
    )
    storage = MemoryBlobStorage()
    arch, _ = archiver(pg_factory, storage)
    report = arch.archive()
    (problem,) = report.problems
    assert "broken chain, not archived" in problem
    assert "seq 2" in problem or "seq 3" in problem  # a forged hash breaks the next link
    assert report.events == 0
    assert storage.list() == []
    assert len(all_db_events(pg_factory)) == 4


def test_a_gap_is_refused(pg_factory: SqlUnitOfWorkFactory) -> None:
    org = new_id()
    events = append(pg_factory, org, hours(T0, 4, step=1))
    Tamper(pg_factory).delete(events[2])
    arch, _ = archiver(pg_factory)
    (problem,) = arch.archive().problems
    assert "missing" in problem
    assert "seq 3" in problem
    assert len(all_db_events(pg_factory)) == 3


def test_the_fast_path_is_postgresql_only(
    uow_factory: UnitOfWorkFactory,
) -> None:
    with uow_factory(read_only=True) as uow:
        builds = bool(getattr(uow.audit_archive, "builds_lines", False))
    dialect = getattr(getattr(uow_factory, "engine", None), "dialect", None)
    assert builds == (getattr(dialect, "name", None) == "postgresql")


def _objects(storage: MemoryBlobStorage) -> dict[str, list[str]]:
    return {
        info.key: gzip.decompress(storage.get(info.key)).decode().split("\n")[:-1]
        for info in storage.list("audit/")
    }


@pytest.mark.parametrize(("concurrency", "level"), [(1, 1), (3, 9), (8, 3)])
def test_threads_and_gzip_levels_archive_the_same_lines(
    uow_factory: UnitOfWorkFactory, concurrency: int, level: int
) -> None:
    backlog = make_backlog(uow_factory)
    storage = MemoryBlobStorage()
    arch, _ = archiver(uow_factory, storage, concurrency=concurrency, compress_level=level)
    report = arch.archive()
    assert (report.problems, report.events, report.batches) == ([], 24, 9)
    objects = _objects(storage)
    assert sorted(report.keys) == sorted(objects)
    by_id = {e.id: e for e in backlog.events}
    for lines in objects.values():
        for line in lines:
            event_id = UUID(line.split('"id":"', 1)[1][:36])
            assert line == canonical_json(event_record(by_id[event_id]))
    assert sum(len(lines) for lines in objects.values()) == 24
    assert arch.verify().problems == []


def test_a_failing_stream_does_not_stop_the_others_with_threads(
    uow_factory: UnitOfWorkFactory,
) -> None:
    good, bad = new_id(), new_id()
    append(uow_factory, good, hours(T0, 3))
    broken = append(uow_factory, bad, hours(T0, 3))
    append(uow_factory, new_id(), hours(T0, 2))
    Tamper(uow_factory).modify(broken[1], "forged")
    arch, _ = archiver(uow_factory, concurrency=2)
    report = arch.archive()
    (problem,) = report.problems
    assert f"stream {bad}" in problem
    assert report.events == 5


def test_settings_reach_the_archiver() -> None:
    from usermgmt import Settings, UserManagement

    settings = Settings(
        _env_file=None,
        environment="test",
        audit_archive_gzip_level=1,
        audit_archive_concurrency=4,
    )
    arch = UserManagement(settings).audit_archiver
    assert (arch.compress_level, arch.concurrency) == (1, 4)
    for bad in ({"audit_archive_gzip_level": 0}, {"audit_archive_concurrency": 0}):
        with pytest.raises(ConfigurationError, match="AUDIT_ARCHIVE_"):
            Settings(_env_file=None, environment="test", **bad)
    with pytest.raises(ValueError, match="compress_level"):
        AuditArchiver(
            MemoryUnitOfWorkFactory(),
            MemoryBlobStorage(),
            FakeClock(T0),
            after_days=1,
            compress_level=10,
        )


def test_no_process_computes_a_dummy_hash() -> None:
    """UserManagement() hashes nothing at start-up (an archive-only process never pays
    argon2's 64 MiB): the SEC-AU-02 dummy hash is built, with the configured cost, a
    16-byte salt and a 32-byte digest, so verifying against it costs what a real hash
    costs; it matches no password, and each process has its own."""
    from usermgmt import Settings, UserManagement
    from usermgmt.security.passwords import _ARGON2_PHC

    settings = Settings(_env_file=None, environment="test")
    hasher: Any = UserManagement(settings).hasher
    other: Any = UserManagement(settings).hasher
    dummy = hasher._dummy_hash
    assert dummy != other._dummy_hash
    match = _ARGON2_PHC.fullmatch(dummy)
    assert match is not None
    assert match["type"] == "argon2id"
    params = hasher.params
    assert (int(match["m"]), int(match["t"]), int(match["p"])) == (
        params.memory_kib,
        params.time_cost,
        params.parallelism,
    )
    assert not hasher.needs_rehash(dummy)  # exactly the cost of a current hash
    real = hasher.hash("correct horse battery")
    salt, digest = (part + "=" * (-len(part) % 4) for part in dummy.rsplit("$", 2)[1:])
    real_salt, real_digest = (part + "=" * (-len(part) % 4) for part in real.rsplit("$", 2)[1:])
    assert (len(base64.b64decode(salt)), len(base64.b64decode(digest))) == (
        len(base64.b64decode(real_salt)),
        len(base64.b64decode(real_digest)),
    )
    assert hasher.verify("correct horse battery", dummy) is False
    hasher.dummy_verify("not the password")  # what a failing login runs: no error


def test_metadata_numbers_jsonb_rewrites_still_verify(pg_factory: SqlUnitOfWorkFactory) -> None:
    """jsonb stores 1e20 as its digits (read back as an int) and has no -0.0: the chain
    hashes the form the column gives back, so such an event is neither refused by the
    archiver nor reported by verify, and the archive holds that form."""
    org = new_id()
    metadata = {"big": 1e20, "neg_zero": -0.0, "pair": (1.5, -2e17), "small": 1e-7, "n": 3}
    chained = add(pg_factory, org, metadata=metadata)
    portable = {"big": 10**20, "neg_zero": 0.0, "pair": [1.5, -2 * 10**17], "small": 1e-7, "n": 3}
    assert chained.metadata == portable
    (stored,) = all_db_events(pg_factory)
    assert stored.metadata == portable
    assert canonical_json(event_record(stored)) == canonical_json(event_record(chained))
    storage = MemoryBlobStorage()
    arch, _ = archiver(pg_factory, storage)
    assert arch.verify().problems == []
    report = arch.archive()
    assert (report.problems, report.events) == ([], 1)
    assert archived_lines(storage) == [canonical_json(event_record(chained))]
    assert arch.verify().problems == []


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_metadata_cannot_hold_nan_or_infinity(bad: float) -> None:
    from usermgmt.audit_chain import portable_metadata

    with pytest.raises(ValueError, match="NaN or infinity"):
        portable_metadata({"nested": [1, {"x": bad}]})
