"""The hash chain on memory, SQLite and PostgreSQL: appends link up per stream, and
``verify`` finds a modified, a deleted and a reordered event (and a truncated chain)."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import threading
from datetime import timedelta, timezone

import pytest

from tests.audit.conftest import T0, Tamper, append, archiver, hours
from usermgmt.audit_chain import (
    GENESIS_HASH,
    PLATFORM_STREAM,
    canonical_json,
    chain_event,
    encode_event,
    encode_parts,
    event_hash,
    event_record,
    stream_of,
)
from usermgmt.backends.sqlalchemy import SqlUnitOfWorkFactory
from usermgmt.ids import new_id
from usermgmt.models import AuditEvent
from usermgmt.ports import UnitOfWorkFactory
from usermgmt.testing.contracts import make_audit_event, transact

pytestmark = pytest.mark.sql


def test_each_stream_is_an_unbroken_chain(uow_factory: UnitOfWorkFactory) -> None:
    org_a, org_b = new_id(), new_id()
    a = append(uow_factory, org_a, hours(T0, 4))
    b = append(uow_factory, org_b, hours(T0, 2))
    p = append(uow_factory, None, hours(T0, 2))
    for chain in (a, b, p):
        assert [e.chain_seq for e in chain] == list(range(1, len(chain) + 1))
        assert chain[0].prev_hash == GENESIS_HASH
        for before, after in itertools.pairwise(chain):
            assert after.prev_hash == before.hash
        assert all(e.hash == event_hash(e) for e in chain)
    report = archiver(uow_factory)[0].verify()
    assert report.problems == []
    assert (report.streams, report.database_events) == (3, 8)
    with uow_factory(read_only=True) as uow:
        heads = uow.audit_archive.heads(after=None, limit=10)
        assert {h.stream: (h.seq, h.hash) for h in heads} == {
            str(org_a): (4, a[-1].hash),
            str(org_b): (2, b[-1].hash),
            PLATFORM_STREAM: (2, p[-1].hash),
        }
        assert uow.audit_archive.heads(after=heads[0].stream, limit=1) == [heads[1]]


def test_stored_events_hash_as_they_were_appended(uow_factory: UnitOfWorkFactory) -> None:
    """What comes back from the store (times, JSON metadata, unicode) hashes the same."""
    org = new_id()
    appended = append(uow_factory, org, hours(T0 + timedelta(microseconds=123456), 3))
    with uow_factory(read_only=True) as uow:
        stored = uow.audit_archive.events(str(org), after_seq=0, limit=10)
    assert stored == appended
    assert [event_hash(e) for e in stored] == [e.hash for e in appended]


def test_verify_reports_a_modified_event(uow_factory: UnitOfWorkFactory) -> None:
    org = new_id()
    events = append(uow_factory, org, hours(T0, 5))
    Tamper(uow_factory).modify(events[2], "member.removed")
    report = archiver(uow_factory)[0].verify()
    assert len(report.problems) == 1
    assert f"stream {org} seq 3: event {events[2].id} was modified" in report.problems[0]


def test_verify_reports_a_deleted_event(uow_factory: UnitOfWorkFactory) -> None:
    org = new_id()
    events = append(uow_factory, org, hours(T0, 5))
    Tamper(uow_factory).delete(events[1])
    (problem,) = archiver(uow_factory)[0].verify().problems
    assert f"stream {org} seq 2: missing (seq 2 deleted or moved); next is seq 3" in problem


def test_verify_reports_a_deleted_last_event(uow_factory: UnitOfWorkFactory) -> None:
    org = new_id()
    events = append(uow_factory, org, hours(T0, 3))
    Tamper(uow_factory).delete(events[-1])
    (problem,) = archiver(uow_factory)[0].verify().problems
    assert "chain ends at seq 2 but its head says 3" in problem


def test_verify_reports_reordered_events(uow_factory: UnitOfWorkFactory) -> None:
    org = new_id()
    events = append(uow_factory, org, hours(T0, 5))
    Tamper(uow_factory).swap(events[1], events[3])
    (problem,) = archiver(uow_factory)[0].verify().problems
    assert f"stream {org} seq 2: event {events[3].id} was modified" in problem


def test_verify_one_stream_and_the_first_break_only(uow_factory: UnitOfWorkFactory) -> None:
    org, other = new_id(), new_id()
    events = append(uow_factory, org, hours(T0, 6))
    append(uow_factory, other, hours(T0, 2))
    tamper = Tamper(uow_factory)
    tamper.modify(events[1], "x")
    tamper.delete(events[4])
    arch = archiver(uow_factory)[0]
    assert len(arch.verify().problems) == 1  # the first break of the broken stream
    assert arch.verify(stream=str(other)).problems == []
    assert arch.verify(stream=str(new_id())).streams == 0


def test_concurrent_appends_to_one_stream_keep_one_chain(uow_factory: UnitOfWorkFactory) -> None:
    if (
        not isinstance(uow_factory, SqlUnitOfWorkFactory)
        or uow_factory.dialect_name != "postgresql"
    ):
        # the memory store serialises every transaction; SQLite locks the whole file
        threads_count, per_thread = 4, 5
    else:
        threads_count, per_thread = 8, 10
    org = new_id()
    barrier = threading.Barrier(threads_count)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            barrier.wait()
            for _ in range(per_thread):
                transact(
                    uow_factory,
                    lambda uow: [
                        uow.audit.add(make_audit_event(organization_id=org)),
                        uow.audit.add(make_audit_event(organization_id=None)),
                    ],
                )
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(threads_count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    total = threads_count * per_thread
    with uow_factory(read_only=True) as uow:
        events = uow.audit_archive.events(str(org), after_seq=0, limit=10_000)
    assert [e.chain_seq for e in events] == list(range(1, total + 1))
    report = archiver(uow_factory)[0].verify()
    assert report.problems == []
    assert report.database_events == 2 * total


@pytest.mark.parametrize(
    "metadata",
    [
        {},
        {"hash": "x", "note": '"hash":"' + "a" * 64 + '",'},
        {"nested": {"hash": None, "list": [1, 2.5, True, None]}, "ünï": '✓ \n " \\'},
    ],
)
@pytest.mark.parametrize("action", ["user.login", '"hash":"0",', 'a\\"hash\\":'])
def test_one_pass_encoding_equals_the_definition(metadata: dict, action: str) -> None:
    """encode_event drops the hash from the serialised line instead of serialising twice;
    whatever the content, the result is the SHA-256 of the canonical form without hash."""
    event = chain_event(
        AuditEvent(
            id=new_id(),
            occurred_at=T0 + timedelta(hours=5, microseconds=7),
            action=action,
            organization_id=new_id(),
            metadata=metadata,
        ),
        7,
        "f" * 64,
    )
    record = event_record(event)
    line, computed = encode_event(event)
    assert json.loads(line) == record
    del record["hash"]
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert computed == hashlib.sha256(canonical.encode()).hexdigest() == event.hash
    assert record["occurred_at"] == "2026-01-01T05:00:00.000007Z"
    tampered = dataclasses.replace(event, hash="nope")  # a stored hash that is not hex
    assert encode_event(tampered)[1] == event.hash


@pytest.mark.parametrize(
    "fields",
    [
        {},  # every optional field None, no organization: the platform stream
        {
            "organization_id": new_id(),
            "actor_user_id": new_id(),
            "target_type": "user",
            "target_id": 'a "quoted"\\ id\n',
            "ip": "2001:db8::1",
            "user_agent": "Mozilla ✓ \u2028 \x01",
            "request_id": "req-ü",
            "metadata": {"z": [1, 2.5, None, 1e20, -0.0], "a": {"hash": "x"}, "é": True},
        },
    ],
)
@pytest.mark.parametrize("offset_hours", [0, 3])
def test_the_archivers_fast_encoding_is_the_canonical_form(fields: dict, offset_hours: int) -> None:
    """encode_parts writes the record field by field; its output is byte for byte the
    canonical line and the hashed form, also for a time given in another zone."""
    event = chain_event(
        AuditEvent(
            id=new_id(),
            occurred_at=T0 + timedelta(hours=5, microseconds=7),
            action='member."added"',
            **fields,
        ),
        12,
        "e" * 64,
    )
    zone = timezone(timedelta(hours=offset_hours))
    event = dataclasses.replace(event, occurred_at=event.occurred_at.astimezone(zone))
    head, tail = encode_parts(event, stream_of(event.organization_id))
    assert f'{head}"hash":"{event.hash}",{tail}' == canonical_json(event_record(event))
    assert hashlib.sha256((head + tail).encode()).hexdigest() == event.hash
