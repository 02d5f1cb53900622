"""The audit hash chain: canonical form of an event and the hashes that link events.

Each organization's events form one chain (its *stream* is the organization id as
text); events without an organization form the ``platform`` stream. Event ``n`` of a
stream stores ``chain_seq = n`` (1, 2, 3, ... without gaps), ``prev_hash`` (the hash of
event ``n - 1``, or :data:`GENESIS_HASH` for the first) and ``hash``: the SHA-256 (hex)
of the event's :func:`canonical_json` without ``hash``. The repositories assign these
when an event is appended, serialised per stream by a chain-head row; nobody else
computes them.

Modifying an event changes its hash; deleting one leaves a gap in ``chain_seq`` and a
``prev_hash`` that no longer matches; reordering changes ``chain_seq`` values, which are
hashed too. :func:`check_event` is the single check ``usermgmt audit verify`` applies
to every event, in the database and in the archive.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import replace
from datetime import UTC, datetime
from json.encoder import encode_basestring
from json.scanner import make_scanner
from typing import Any
from uuid import UUID

from usermgmt.models import AuditEvent

__all__ = [
    "CHAIN_VERSION",
    "GENESIS_HASH",
    "PLATFORM_STREAM",
    "canonical_json",
    "chain_event",
    "check_and_encode",
    "check_event",
    "encode_event",
    "encode_parts",
    "event_from_record",
    "event_hash",
    "event_record",
    "metadata_json",
    "organization_of",
    "portable_metadata",
    "stream_of",
]

#: The stream of events that belong to no organization.
PLATFORM_STREAM = "platform"
#: ``prev_hash`` of the first event of every stream.
GENESIS_HASH = "0" * 64
#: Version of the canonical form (part of every hashed record).
CHAIN_VERSION = 1


def stream_of(organization_id: UUID | None) -> str:
    """The chain an event with this organization belongs to."""
    return PLATFORM_STREAM if organization_id is None else str(organization_id)


def organization_of(stream: str) -> UUID | None:
    """The organization id of a stream (None for the platform stream);
    ValueError for anything else."""
    return None if stream == PLATFORM_STREAM else UUID(stream)


_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
try:  # _ENCODER's own C encoder, built once (JSONEncoder.encode builds one per call)
    from _json import make_encoder as _make_encoder

    _C_ENCODE: Any = _make_encoder(
        None, _ENCODER.default, encode_basestring, None, ":", ",", True, False, True
    )
except ImportError:  # pragma: no cover - CPython always has _json
    _C_ENCODE = None


def _object_json(value: Any) -> str:
    """``_ENCODER.encode(value)`` (no circular-reference check: values read from JSON)."""
    if _C_ENCODE is None:  # pragma: no cover
        return _ENCODER.encode(value)
    return "".join(_C_ENCODE(value, 0))


_HEX = frozenset("0123456789abcdef")
_SCAN: Any = make_scanner(json.JSONDecoder())  # type: ignore[arg-type]  # typeshed


def metadata_json(text: str) -> str:
    """The canonical JSON (as in :func:`canonical_json`) of the value in the JSON text
    ``text``, e.g. a jsonb column's text: the archiver's fast path. ValueError if
    ``text`` is not JSON; RecursionError if nested too deep."""
    try:
        value, end = _SCAN(text, 0)
    except StopIteration:
        raise ValueError("not JSON") from None
    if end != len(text):
        value = json.loads(text)  # trailing whitespace, or raises
    return _object_json(value)


def _time(value: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (always microseconds) in UTC."""
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    # An aware UTC time always ends in "+00:00": cheaper than replace(tzinfo=None).
    return value.isoformat(timespec="microseconds")[:-6] + "Z"


def event_record(event: AuditEvent) -> dict[str, Any]:
    """The canonical record of a chained event: what is hashed (everything but
    ``hash``) plus ``hash``; also one line of an archive object."""
    organization_id = None if event.organization_id is None else str(event.organization_id)
    return {
        "v": CHAIN_VERSION,
        "stream": PLATFORM_STREAM if organization_id is None else organization_id,
        "seq": event.chain_seq,
        "id": str(event.id),
        "occurred_at": _time(event.occurred_at),
        "action": event.action,
        "actor_user_id": None if event.actor_user_id is None else str(event.actor_user_id),
        "organization_id": organization_id,
        "outcome": event.outcome,
        "target_type": event.target_type,
        "target_id": event.target_id,
        "ip": event.ip,
        "user_agent": event.user_agent,
        "request_id": event.request_id,
        "metadata": event.metadata,
        "prev_hash": event.prev_hash,
        "hash": event.hash,
    }


def canonical_json(record: dict[str, Any]) -> str:
    """Sorted keys, no whitespace, UTF-8 text: the same bytes for the same record."""
    return _ENCODER.encode(record)


def encode_event(event: AuditEvent) -> tuple[str, str]:
    """``(line, computed_hash)``: the canonical JSON of the record *with* the stored
    ``hash`` (an archive line) and the SHA-256 of the canonical JSON *without* it, from
    one serialisation. With sorted keys ``"hash"`` is always followed by ``"id"``, and
    ``"hash":`` cannot occur inside an encoded string value, so dropping its first
    occurrence (and the comma) yields exactly the canonical form without ``hash``."""
    line, _stream = _encode(event)
    return line, _bare_hash(line, event.hash)


def _encode(event: AuditEvent) -> tuple[str, str]:
    record = event_record(event)
    return _ENCODER.encode(record), record["stream"]


def encode_parts(event: AuditEvent, stream: str) -> tuple[str, str]:
    """The archiver's fast path for an event of ``stream``: ``(head, tail)`` such that
    ``head + tail`` is meant to be the canonical JSON of the record without ``hash``,
    and ``head + '"hash":"…",' + tail`` its archive line. Written field by field in
    sorted-key order instead of building, sorting and encoding a dict.

    The caller must check that ``stream`` is the event's stream and that the SHA-256 of
    ``head + tail`` is the event's stored ``hash`` (then these are the very bytes that
    were hashed, so the line is canonical), and otherwise use :func:`check_and_encode`,
    the reference. TypeError for values this path cannot write."""
    actor, target_type, target_id = event.actor_user_id, event.target_type, event.target_id
    ip, user_agent, request_id = event.ip, event.user_agent, event.request_id
    at = event.occurred_at
    if at.tzinfo is not UTC:
        at = at.astimezone(UTC)
    organization = "null" if stream == PLATFORM_STREAM else f'"{stream}"'
    actor_text = "null" if actor is None else f'"{actor}"'
    return (f'{{"action":{encode_basestring(event.action)},"actor_user_id":{actor_text},'), (
        f'"id":"{event.id}",'
        f'"ip":{"null" if ip is None else encode_basestring(ip)},'
        f'"metadata":{_object_json(event.metadata)},'
        f'"occurred_at":"{at.isoformat(timespec="microseconds")[:-6]}Z",'
        f'"organization_id":{organization},'
        f'"outcome":{encode_basestring(event.outcome)},'
        f'"prev_hash":{"null" if event.prev_hash is None else encode_basestring(event.prev_hash)},'
        f'"request_id":{"null" if request_id is None else encode_basestring(request_id)},'
        f'"seq":{int(event.chain_seq)},"stream":"{stream}",'  # type: ignore[arg-type]
        f'"target_id":{"null" if target_id is None else encode_basestring(target_id)},'
        f'"target_type":{"null" if target_type is None else encode_basestring(target_type)},'
        f'"user_agent":{"null" if user_agent is None else encode_basestring(user_agent)},'
        f'"v":{CHAIN_VERSION}}}'
    )


def _bare_hash(line: str, stored: str | None) -> str:
    if stored is not None and len(stored) == 64 and _HEX.issuperset(stored):
        segment = f'"hash":"{stored}",'  # what the encoder writes for a hex string
    else:
        segment = '"hash":' + _ENCODER.encode(stored) + ","
    bare = line.replace(segment, "", 1)
    return hashlib.sha256(bare.encode()).hexdigest()


def event_hash(event: AuditEvent) -> str:
    """SHA-256 (hex) of the canonical record without ``hash``."""
    return encode_event(event)[1]


#: Floats from this magnitude on are whole numbers that ``repr`` writes with an exponent
#: (``1e+16``); PostgreSQL's jsonb keeps them as the digits, which read back as an int.
_EXPONENT_FLOAT = 1e16


def portable_metadata(value: Any) -> Any:
    """``value`` as every backend gives it back: a whole float from 1e16 on becomes the
    int jsonb returns for it, ``-0.0`` becomes ``0.0`` (jsonb has no negative zero),
    tuples become lists. ValueError for NaN and infinities, which JSON cannot hold.

    :func:`chain_event` hashes this form, so an event's hash still matches after its
    metadata went through a jsonb column."""
    if type(value) is float:
        if value != value or value in (math.inf, -math.inf):
            raise ValueError("audit metadata cannot hold NaN or infinity")
        if value == 0.0:
            return 0.0
        if abs(value) >= _EXPONENT_FLOAT:
            return int(value)
        return value
    if isinstance(value, dict):
        return {key: portable_metadata(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [portable_metadata(item) for item in value]
    return value


def chain_event(event: AuditEvent, seq: int, prev_hash: str) -> AuditEvent:
    """``event`` as number ``seq`` of its stream, after the event hashed ``prev_hash``;
    its metadata in :func:`portable_metadata` form."""
    linked = replace(
        event,
        chain_seq=seq,
        prev_hash=prev_hash,
        hash=None,
        metadata=portable_metadata(event.metadata),
    )
    return replace(linked, hash=event_hash(linked))


def event_from_record(record: dict[str, Any]) -> AuditEvent:
    """The event of an archive line; ValueError / KeyError / TypeError if malformed."""

    def uuid_or_none(value: Any) -> UUID | None:
        return None if value is None else UUID(str(value))

    occurred = datetime.strptime(str(record["occurred_at"]), "%Y-%m-%dT%H:%M:%S.%fZ")
    metadata = record["metadata"]
    if not isinstance(metadata, dict):
        raise TypeError("metadata is not an object")
    return AuditEvent(
        id=UUID(str(record["id"])),
        occurred_at=occurred.replace(tzinfo=UTC),
        action=str(record["action"]),
        actor_user_id=uuid_or_none(record["actor_user_id"]),
        organization_id=uuid_or_none(record["organization_id"]),
        outcome=str(record["outcome"]),
        target_type=record["target_type"],
        target_id=record["target_id"],
        ip=record["ip"],
        user_agent=record["user_agent"],
        request_id=record["request_id"],
        metadata=metadata,
        chain_seq=int(record["seq"]),
        prev_hash=record["prev_hash"],
        hash=record["hash"],
    )


def check_event(event: AuditEvent, *, stream: str, seq: int, prev_hash: str | None) -> str | None:
    """Why ``event`` is not number ``seq`` of ``stream`` following ``prev_hash``
    (None: it is). ``prev_hash`` None skips the link check (after a missing object)."""
    return check_and_encode(event, stream=stream, seq=seq, prev_hash=prev_hash)[0]


def check_and_encode(
    event: AuditEvent, *, stream: str, seq: int, prev_hash: str | None
) -> tuple[str | None, str]:
    """:func:`check_event`'s verdict and the event's archive line, from one serialisation."""
    line, own = _encode(event)
    computed = _bare_hash(line, event.hash)
    where = f"stream {stream} seq {seq}"
    if own != stream:
        return f"{where}: event {event.id} belongs to stream {own}", line
    if event.chain_seq != seq:
        found = event.chain_seq
        if isinstance(found, int) and found > seq:
            missing = f"{seq}" if found == seq + 1 else f"{seq}..{found - 1}"
            return (
                f"{where}: missing (seq {missing} deleted or moved); "
                f"next is seq {found} ({event.id})"
            ), line
        return f"{where}: out of order, found seq {found} ({event.id})", line
    if event.hash != computed:
        return f"{where}: event {event.id} was modified (hash does not match its content)", line
    if prev_hash is not None and event.prev_hash != prev_hash:
        return f"{where}: chain broken at event {event.id} (prev_hash does not match)", line
    return None, line
