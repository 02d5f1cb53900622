"""Audit archival, verification and export (``usermgmt audit archive|verify|export``).

**Archive** (SECURITY.md F10: copy → verify → delete). Each stream (organization, or
``platform``) is archived as a prefix of its hash chain: events in ``chain_seq`` order,
up to the first one younger than ``AUDIT_ARCHIVE_AFTER_DAYS``. They are read in pages of
:data:`PAGE_SIZE` (keyset on ``chain_seq``, one short read transaction per page) and
cut into batches of at most ``batch_size`` events of one UTC day. A batch becomes one
gzip JSON Lines object (one :func:`~usermgmt.audit_chain.event_record` per line,
byte-for-byte deterministic) under :func:`archive_key`. It is uploaded with its SHA-256,
read back with ``head`` (size and SHA-256 must match), and only then are the ledger row
and the deletion of exactly those rows committed in one transaction. Any failure leaves
the rows in place; a re-run rebuilds the same bytes under the same key (the upload is
then a no-op) and carries on. Different bytes under an existing key are refused.

**Verify** checks each chain across the archive (the ledger, the object checksums and
every archived event) and the database, against the chain head, and reports the first
break of each stream.

**Export** streams a stream's events from the archive and the database, in chain order.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import logging
import sys
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, TypeVar

from usermgmt.audit_chain import (
    GENESIS_HASH,
    check_and_encode,
    check_event,
    encode_parts,
    event_from_record,
    event_record,
    metadata_json,
    organization_of,
)
from usermgmt.errors import BlobExists, BlobIntegrityError, Conflict, UserMgmtError
from usermgmt.models import AuditEvent
from usermgmt.ports import (
    AuditArchiveBatch,
    AuditChainHead,
    BlobStorage,
    Clock,
    UnitOfWorkFactory,
)

__all__ = [
    "AUDIT_ARCHIVE_TASK",
    "ArchiveReport",
    "AuditArchiver",
    "VerifyReport",
    "archive_key",
]

logger = logging.getLogger("usermgmt.audit")

#: The queue task (payload ``{}``) that runs :meth:`AuditArchiver.archive`.
AUDIT_ARCHIVE_TASK = "audit.archive"
#: Events per archive object, at most.
DEFAULT_BATCH_SIZE = 50_000
#: Events read per database round trip.
PAGE_SIZE = 5_000
#: gzip level of archive objects: level 3 is about twice as fast as the default 6 for
#: some 10 % larger objects (JSON Lines of audit events compress about 5:1 either way).
COMPRESS_LEVEL = 3
#: Lines handed to the compressor at once.
WRITE_BLOCK = 1_000
#: Chain heads read per round trip.
HEADS_PAGE = 500
CONTENT_TYPE = "application/gzip"
#: ArchiveReport.keys lists at most this many keys (memory stays bounded).
MAX_REPORTED_KEYS = 1_000

Progress = Callable[[int, int], None]


def archive_key(stream: str, day: date, first_seq: int, last_seq: int) -> str:
    """``audit/{stream}/{YYYY-MM-DD}/{first_seq:012d}-{last_seq:012d}.jsonl.gz``."""
    return f"audit/{stream}/{day.isoformat()}/{first_seq:012d}-{last_seq:012d}.jsonl.gz"


@dataclass
class ArchiveReport:
    """What :meth:`AuditArchiver.archive` did (or, with ``dry_run``, would do); ``keys``
    holds the first :data:`MAX_REPORTED_KEYS` object keys."""

    cutoff: datetime
    dry_run: bool = False
    batches: int = 0
    events: int = 0
    keys: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class VerifyReport:
    """What :meth:`AuditArchiver.verify` found: one line per broken stream."""

    streams: int = 0
    archived_events: int = 0
    database_events: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _utc_day(at: datetime) -> date:
    return (at if at.tzinfo is UTC else at.astimezone(UTC)).date()


class _Batch:
    """One archive object being built: gzip JSON Lines written as events arrive, in
    blocks of :data:`WRITE_BLOCK` lines, compressed by ``packer`` (one thread: zlib
    releases the GIL) while the next block is encoded; one block in flight at most."""

    def __init__(
        self,
        stream: str,
        first_at: datetime,
        first_seq: int,
        packer: ThreadPoolExecutor,
        level: int = COMPRESS_LEVEL,
    ) -> None:
        self.stream = stream
        self.day = _utc_day(first_at)
        #: The batch's UTC day is [day_start, day_end).
        self.day_start = datetime.combine(self.day, time(), UTC)
        self.day_end = self.day_start + timedelta(days=1)
        self.count = 0
        self.first_seq = self.last_seq = first_seq
        self.min_at = self.max_at = first_at
        self._lines: list[str] = []
        self._packer = packer
        self._pending: Future[int] | None = None
        self._buffer = io.BytesIO()
        # mtime=0 and no file name: the same events always give the same bytes.
        self._gzip = gzip.GzipFile(fileobj=self._buffer, mode="wb", mtime=0, compresslevel=level)

    def fits(self, at: datetime, batch_size: int) -> bool:
        """Whether an event at ``at`` belongs in this batch (same UTC day, room left)."""
        return self.count < batch_size and self.day_start <= at < self.day_end

    def add(self, seq: int, at: datetime, line: str) -> None:
        """Append event ``seq`` (at ``at``) whose canonical line is ``line``."""
        self.last_seq = seq
        self.count += 1
        if at < self.min_at:
            self.min_at = at
        elif at > self.max_at:
            self.max_at = at
        lines = self._lines
        lines.append(line)
        if len(lines) >= WRITE_BLOCK:
            self._write()

    def add_lines(self, lines: list[str], last_seq: int) -> None:
        """Append whole lines (the fast path: times and counts come from the database)."""
        self.last_seq = last_seq
        self.count += len(lines)
        self._lines.extend(lines)
        self._write()

    def __enter__(self) -> _Batch:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        """On an exception the batch is given up (after the compressor's block)."""
        if exc_type is not None:
            self._lines.clear()
            pending, self._pending = self._pending, None
            if pending is not None:
                pending.exception()

    def _write(self) -> None:
        if self._lines:
            self._lines.append("")
            block = "\n".join(self._lines).encode()
            self._lines.clear()
            self._wait()
            self._pending = self._packer.submit(self._gzip.write, block)

    def _wait(self) -> None:
        if self._pending is not None:
            self._pending.result()
            self._pending = None

    @property
    def key(self) -> str:
        return archive_key(self.stream, self.day, self.first_seq, self.last_seq)

    def finish(self) -> bytes:
        self._write()
        self._wait()
        self._gzip.close()
        data = self._buffer.getvalue()
        self._buffer = io.BytesIO()  # not two copies while the batch is uploaded
        return data


def _lines_sha256(data: bytes) -> str:
    """SHA-256 of the decompressed content of a gzip object, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    with gzip.GzipFile(fileobj=io.BytesIO(data), mode="rb") as unpacked:
        while piece := unpacked.read(1 << 20):
            digest.update(piece)
    return digest.hexdigest()


def _line_event(line: str) -> AuditEvent:
    record = json.loads(line)
    if not isinstance(record, dict):
        raise TypeError("not an object")
    return event_from_record(record)


def read_archive_object(data: bytes) -> Iterator[AuditEvent]:
    """The events of an archive object; ValueError if it is not one."""
    try:
        text = gzip.decompress(data).decode()
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a gzip JSON Lines object: {exc}") from None
    # Lines end in "\n" only: str.splitlines() would also split at U+2028, U+2029 and
    # U+0085, which canonical JSON (ensure_ascii=False) leaves unescaped in strings.
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    for number, line in enumerate(lines, 1):
        try:
            event = _line_event(line)
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"line {number} is not an audit event ({exc})") from None
        yield event


_T = TypeVar("_T")


def _read_ahead(pages: Iterator[_T], reader: ThreadPoolExecutor) -> Iterator[_T]:
    """``pages``, the next one read in ``reader`` while the caller works on this one (the
    driver releases the GIL while it waits for the database, so the database's work
    overlaps ours). One page ahead at most; ``pages`` is closed at the end."""
    end: Any = object()
    pending: Future[_T] = reader.submit(next, pages, end)
    try:
        while (page := pending.result()) is not end:
            pending = reader.submit(next, pages, end)
            yield page
    finally:
        pending.exception()  # never two threads in ``pages`` at once
        close = getattr(pages, "close", None)
        if close is not None:
            close()


class _Run:
    """One :meth:`AuditArchiver.archive` call, shared by the threads archiving streams."""

    def __init__(self, report: ArchiveReport, progress: Progress | None) -> None:
        self.report = report
        self.progress = progress
        self.total = 0
        self.lock = threading.Lock()
        #: Set when an unexpected exception ends the run: streams not started are skipped.
        self.stop = False


class AuditArchiver:
    """Archive, verify and export the audit trail (see the module docstring).

    Thread-safe and stateless between calls; several archivers may run at once (the
    ledger's primary key lets exactly one record a batch).
    """

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        storage: BlobStorage,
        clock: Clock,
        *,
        after_days: int,
        batch_size: int = DEFAULT_BATCH_SIZE,
        page_size: int = PAGE_SIZE,
        compress_level: int = COMPRESS_LEVEL,
        concurrency: int = 1,
    ) -> None:
        if batch_size < 1 or page_size < 1 or concurrency < 1:
            raise ValueError("batch_size, page_size and concurrency must be positive")
        if not 1 <= compress_level <= 9:
            raise ValueError("compress_level must be 1..9")
        self._uow = uow
        self.storage = storage
        self._clock = clock
        self.after_days = after_days
        self.batch_size = batch_size
        self.page_size = page_size
        self.compress_level = compress_level
        self.concurrency = concurrency

    # --- reading ---------------------------------------------------------------------

    def _heads(self, stream: str | None) -> Iterator[AuditChainHead]:
        if stream is not None:
            with self._uow(read_only=True) as uow:
                head = uow.audit_archive.head(stream)
            if head is not None:
                yield head
            return
        after: str | None = None
        while True:
            with self._uow(read_only=True) as uow:
                page = uow.audit_archive.heads(after=after, limit=HEADS_PAGE)
            yield from page
            if len(page) < HEADS_PAGE:
                return
            after = page[-1].stream

    def _page(self, stream: str, after_seq: int) -> list[AuditEvent]:
        with self._uow(read_only=True) as uow:
            return uow.audit_archive.events(stream, after_seq=after_seq, limit=self.page_size)

    def _db_events(self, stream: str, after_seq: int) -> Iterator[AuditEvent]:
        """Events of ``stream`` in the database after ``after_seq``, page by page."""
        while True:
            page = self._page(stream, after_seq)
            yield from page
            if len(page) < self.page_size:
                return
            after_seq = int(page[-1].chain_seq or after_seq)

    def _prefetched_events(self, stream: str, after_seq: int) -> Iterator[AuditEvent]:
        """:meth:`_db_events`, reading the next page in a thread while the caller works
        through this one (the database's and the driver's time overlap the encoding;
        socket waits release the GIL). At most two pages are held."""
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-archive-read") as pool:
            pending: Future[list[AuditEvent]] | None = pool.submit(self._page, stream, after_seq)
            while pending is not None:
                page = pending.result()
                pending = None
                if len(page) == self.page_size:
                    last = int(page[-1].chain_seq or after_seq)
                    pending = pool.submit(self._page, stream, last)
                yield from page

    def _batches(self, stream: str) -> list[AuditArchiveBatch]:
        with self._uow(read_only=True) as uow:
            return uow.audit_archive.batches(stream)

    # --- archive -----------------------------------------------------------------------

    def archive(self, *, dry_run: bool = False, progress: Progress | None = None) -> ArchiveReport:
        """Archive every event older than ``after_days``; see the module docstring.

        Failures of one stream (storage down, checksum mismatch, a different object
        under the key, a broken chain) are logged and listed in ``problems``; that
        stream keeps its rows and the others go on. Other exceptions propagate (the
        rows of the batch in flight are kept). With ``concurrency`` > 1, that many
        streams are archived at once (threads; streams are independent chains).
        """
        cutoff = self._clock.now() - timedelta(days=self.after_days)
        run = _Run(ArchiveReport(cutoff=cutoff, dry_run=dry_run), progress)
        if progress is not None:
            with self._uow(read_only=True) as uow:
                run.total = uow.audit_archive.count_before(cutoff)
            progress(0, run.total)
        if self.concurrency == 1:
            for head in self._heads(None):
                self._archive_one(head.stream, run)
            return run.report
        with ThreadPoolExecutor(
            max_workers=self.concurrency, thread_name_prefix="audit-archive"
        ) as pool:
            pending: set[Future[None]] = set()
            try:
                for head in self._heads(None):
                    if len(pending) >= 2 * self.concurrency:  # bounded: heads are paged
                        done, pending = wait(pending, return_when=FIRST_COMPLETED)
                        for future in done:
                            future.result()
                    pending.add(pool.submit(self._archive_one, head.stream, run))
            finally:
                run.stop = bool(pending) and sys.exc_info()[0] is not None
                done, _ = wait(pending)
            for future in done:
                future.result()
        run.report.problems.sort()
        return run.report

    def _archive_one(self, stream: str, run: _Run) -> None:
        if run.stop:
            return
        try:
            self._archive_stream(stream, run)
        except UserMgmtError as exc:
            problem = f"stream {stream}: archival stopped: {exc.detail}"
            logger.error("audit archive: %s", problem)
            with run.lock:
                run.report.problems.append(problem)

    def _archive_stream(self, stream: str, run: _Run) -> None:
        ledger = self._batches(stream)
        after_seq = ledger[-1].last_seq if ledger else 0
        prev: str | None = GENESIS_HASH
        if ledger:
            # The next event must link to the last archived one: its hash is read from
            # the archive (one object), only when an event is due.
            with self._uow(read_only=True) as uow:
                due = uow.audit_archive.events(stream, after_seq=after_seq, limit=1)
            if not due or due[0].occurred_at >= run.report.cutoff:
                return
            prev = self._archived_hash(ledger[-1])
        with self._uow(read_only=True) as uow:
            fast = bool(getattr(uow.audit_archive, "builds_lines", False))
        with (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-archive-gzip") as packer,
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-archive-put") as putter,
        ):
            flushing: list[Future[None]] = []
            try:
                if fast:
                    self._archive_built(stream, after_seq, prev, run, packer, putter, flushing)
                else:
                    self._archive_events(stream, after_seq, prev, run, packer, putter, flushing)
            finally:
                for future in flushing:  # the last one; let it finish (or fail) first
                    future.exception()
            for future in flushing:
                future.result()

    def _archived_hash(self, batch: AuditArchiveBatch) -> str:
        """The hash of the last event of the ledgered object ``batch``; Conflict if the
        object is not what the ledger says (``audit verify`` tells more)."""
        data = self.storage.get(batch.key)
        last: AuditEvent | None = None
        try:
            if hashlib.sha256(data).hexdigest() == batch.sha256:
                for last in read_archive_object(data):  # noqa: B007 - the last one
                    pass
        except ValueError:
            last = None
        if last is None or last.chain_seq != batch.last_seq or last.hash is None:
            raise Conflict(
                f"{batch.key}: not the archived seq ..{batch.last_seq} the ledger records; "
                "nothing archived (run audit verify)"
            )
        return last.hash

    def _broken(self, stream: str, after_seq: int, problem: str) -> Conflict:
        ledger_now = self._batches(stream)
        if ledger_now and ledger_now[-1].last_seq > after_seq:
            return Conflict("archived meanwhile by another archiver run; skipped")
        return Conflict(f"broken chain, not archived: {problem}")

    def _hand_over(
        self, batch: _Batch, run: _Run, putter: ThreadPoolExecutor, flushing: list[Future[None]]
    ) -> None:
        """Flush ``batch`` in the ``putter`` thread (upload, HEAD, ledger and DELETE)
        while the caller reads the next one, after the previous flush succeeded: one
        batch in flight at most, recorded in chain order, none after a failure."""
        for future in flushing:
            future.result()
        flushing.clear()
        flushing.append(putter.submit(self._flush, batch, run))

    def _archive_events(
        self,
        stream: str,
        after_seq: int,
        prev: str | None,
        run: _Run,
        packer: ThreadPoolExecutor,
        putter: ThreadPoolExecutor,
        flushing: list[Future[None]],
    ) -> None:
        """The generic path: events through the repository interface, each checked and
        encoded here."""
        cutoff = run.report.cutoff
        expected = after_seq + 1
        batch: _Batch | None = None
        batch_size = self.batch_size
        sha256 = hashlib.sha256
        organization = organization_of(stream)
        with contextlib.ExitStack() as batches:
            for event in self._prefetched_events(stream, after_seq):
                at = event.occurred_at
                if at >= cutoff:
                    break
                # Fast path: check_event's checks on one hand-written serialisation (see
                # encode_parts: a matching hash proves it canonical).
                parts = None
                if (
                    event.chain_seq == expected
                    and event.organization_id == organization
                    and (prev is None or event.prev_hash == prev)
                ):
                    try:
                        parts = encode_parts(event, stream)
                    except (TypeError, ValueError, RecursionError):
                        parts = None
                if (
                    parts is not None
                    and sha256((parts[0] + parts[1]).encode()).hexdigest() == event.hash
                ):
                    line = f'{parts[0]}"hash":"{event.hash}",{parts[1]}'
                else:  # something is wrong (or unusual): the reference check says what
                    problem, line = check_and_encode(
                        event, stream=stream, seq=expected, prev_hash=prev
                    )
                    if problem is not None:
                        raise self._broken(stream, after_seq, problem)
                if batch is not None and not batch.fits(at, batch_size):
                    self._hand_over(batch, run, putter, flushing)
                    batch = None
                if batch is None:
                    batch = _Batch(stream, at, expected, packer, self.compress_level)
                    batches.enter_context(batch)
                batch.add(expected, at, line)
                expected, prev = expected + 1, event.hash
        if batch is not None:
            self._hand_over(batch, run, putter, flushing)

    def _archive_built(
        self,
        stream: str,
        after_seq: int,
        prev: str | None,
        run: _Run,
        packer: ThreadPoolExecutor,
        putter: ThreadPoolExecutor,
        flushing: list[Future[None]],
    ) -> None:
        """The fast path of a repository that finds the batches and writes most of each
        canonical line itself (PostgreSQL): here each line is completed with its
        canonical ``metadata``, hashed and checked against the stored hash, link and
        sequence number; any event that does not pass goes through the reference check
        (:func:`check_and_encode`), which archives it or says what is wrong."""
        expected = after_seq + 1
        reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-archive-read")
        with reader:
            while not run.stop:
                found = self._next_built_batch(
                    stream, after_seq, expected, prev, run, packer, reader
                )
                if found is None:
                    return
                batch, expected, prev = found
                self._hand_over(batch, run, putter, flushing)
                after_seq = batch.last_seq

    def _next_built_batch(
        self,
        stream: str,
        after_seq: int,
        expected: int,
        prev: str | None,
        run: _Run,
        packer: ThreadPoolExecutor,
        reader: ThreadPoolExecutor,
    ) -> tuple[_Batch, int, str | None] | None:
        """The next batch of :meth:`_archive_built` (compressed, not flushed) and the
        next ``(expected, prev)``; None when the stream has no more due events."""
        with self._uow(read_only=True) as uow:
            repo: Any = uow.audit_archive
            found = repo.next_batch(
                stream, after_seq=after_seq, limit=self.batch_size, cutoff=run.report.cutoff
            )
            if found is None:
                return None
            count, last_seq, min_at, max_at = found
            batch = _Batch(stream, min_at, expected, packer, self.compress_level)
            with batch:
                pages = repo.line_parts(stream, after_seq=after_seq, last_seq=last_seq)
                for rows in _read_ahead(pages, reader):
                    lines, expected, prev = self._complete(stream, rows, expected, prev, after_seq)
                    batch.add_lines(lines, expected - 1)
                if expected - 1 != last_seq or batch.count != count:
                    problem = (
                        f"stream {stream}: expected seq {after_seq + 1}..{last_seq}, "
                        f"read ..{expected - 1}"
                    )
                    raise self._broken(stream, after_seq, problem)
        batch.min_at, batch.max_at = min_at, max_at
        return batch, expected, prev

    def _complete(
        self,
        stream: str,
        rows: Sequence[Any],
        expected: int,
        prev: str | None,
        after_seq: int,
    ) -> tuple[list[str], int, str | None]:
        """The archive lines of a page of line parts (see ``audit_lines``) continuing the
        chain at ``expected``/``prev``, and the next ``(expected, prev)``."""
        sha256 = hashlib.sha256
        lines: list[str] = []
        add = lines.append
        # ``metadata`` comes as jsonb text ('{"a": 1, "b": [2, 3]}'): it is parsed and
        # encoded. (Never just stripped of ", " and ": ": a string in the database
        # changed from "x,y" to "x, y" would then hash right and be archived as the
        # original, the modified row deleted.)
        for head, middle, metadata, tail, seq, prev_hash, hash_ in rows:
            if seq == expected and (prev is None or prev_hash == prev) and metadata is not None:
                # A matching SHA-256 proves these the very bytes that were hashed, i.e.
                # the canonical form (and hash_ 64 hex digits: no escaping needed).
                try:
                    body = f"{middle}{metadata_json(metadata)}{tail}"
                except (TypeError, ValueError, RecursionError):
                    body = ""  # not JSON: never hashes right (and the reference says why)
                if body and sha256(f"{head}{body}".encode()).hexdigest() == hash_:
                    add(f'{head}"hash":"{hash_}",{body}')
                    expected, prev = expected + 1, hash_
                    continue
            # Unusual or wrong: the reference check on the event itself (read on another
            # connection: the reader thread may be using this one).
            with self._uow(read_only=True) as uow:
                events = uow.audit_archive.events(stream, after_seq=int(seq) - 1, limit=1)
            if not events:
                raise self._broken(stream, after_seq, f"stream {stream} seq {seq}: vanished")
            problem, line = check_and_encode(events[0], stream=stream, seq=expected, prev_hash=prev)
            if problem is not None:
                raise self._broken(stream, after_seq, problem)
            add(line)
            expected, prev = expected + 1, events[0].hash
        return lines, expected, prev

    def _flush(self, batch: _Batch, run: _Run) -> None:
        data = batch.finish()
        key = batch.key
        report = run.report
        if not report.dry_run:
            data, digest = self._store(key, data)
            ledger_row = AuditArchiveBatch(
                stream=batch.stream,
                first_seq=batch.first_seq,
                last_seq=batch.last_seq,
                min_occurred_at=batch.min_at,
                max_occurred_at=batch.max_at,
                key=key,
                size=len(data),
                sha256=digest,
                event_count=batch.count,
                archived_at=self._clock.now(),
            )
            with self._uow() as uow:
                try:
                    deleted = uow.audit_archive.record_batch(ledger_row)
                except Conflict:
                    raise Conflict(
                        f"{key}: recorded already (another archiver run?); nothing deleted"
                    ) from None
                if deleted != batch.count:
                    uow.rollback()
                    raise Conflict(
                        f"{key}: expected to delete {batch.count} events, found {deleted}; "
                        "nothing deleted"
                    )
                uow.commit()
            logger.info("audit archive: %s (%d events)", key, batch.count)
        with run.lock:
            report.batches += 1
            report.events += batch.count
            if len(report.keys) < MAX_REPORTED_KEYS:
                report.keys.append(key)
            if run.progress is not None:
                run.progress(report.events, run.total)

    def _store(self, key: str, data: bytes) -> tuple[bytes, str]:
        """Upload with the checksum, then confirm size and checksum of what is stored;
        the bytes stored under ``key`` and their SHA-256.

        An object already under ``key`` (a run that failed after its upload) is kept if
        it holds the same lines compressed differently (another gzip level or zlib
        build); anything else is refused."""
        digest = hashlib.sha256(data).hexdigest()
        try:
            self.storage.put(key, data, content_type=CONTENT_TYPE, checksum_sha256=digest)
        except BlobExists:
            data = self._same_content(key, data)
            digest = hashlib.sha256(data).hexdigest()
        info = self.storage.head(key)
        if info is None:
            raise BlobIntegrityError(f"{key}: not found right after the upload")
        if info.size != len(data) or info.sha256 != digest:
            raise BlobIntegrityError(
                f"{key}: stored object does not match the upload (size {info.size} vs "
                f"{len(data)}, sha256 {info.sha256[:12]}… vs {digest[:12]}…)"
            )
        return data, digest

    def _same_content(self, key: str, data: bytes) -> bytes:
        """The object under ``key`` if it decompresses to the same lines as ``data``;
        BlobExists otherwise. Both are decompressed piecewise: memory stays bounded."""
        refused = BlobExists(
            f"{key} exists with different content; refusing to archive over it "
            "(inspect the object and the ledger)"
        )
        try:
            existing = self.storage.get(key)
            same = _lines_sha256(existing) == _lines_sha256(data)
        except (UserMgmtError, OSError, EOFError, zlib.error):
            raise refused from None
        if not same:
            raise refused
        logger.info("audit archive: %s exists with the same events; kept", key)
        return existing

    # --- verify ------------------------------------------------------------------------

    def verify(self, *, stream: str | None = None) -> VerifyReport:
        """Check the chains (all, or one ``stream``); the first break of each is a problem."""
        report = VerifyReport()
        for head in self._heads(stream):
            report.streams += 1
            problem = self._verify_stream(head, report)
            if problem is not None:
                report.problems.append(problem)
        return report

    def _verify_stream(self, head: AuditChainHead, report: VerifyReport) -> str | None:
        """The first break of ``head.stream``'s chain, up to ``head.seq``.

        Events appended after the head was read (``chain_seq > head.seq``) are left for
        the next run. An archiver run that commits between the ledger read and the
        database read leaves a gap at the archive/database boundary; the ledger is then
        read again once (as :meth:`export` does) before reporting anything."""
        stream = head.stream
        expected, prev = 1, GENESIS_HASH
        reread = False
        while True:
            for batch in [b for b in self._batches(stream) if b.last_seq >= expected]:
                checked = self._verify_batch(batch, stream, expected, prev, report)
                if isinstance(checked, str):
                    return checked
                expected, prev = checked
            boundary_gap = False
            at_boundary = True
            for event in self._db_events(stream, expected - 1):
                seq = int(event.chain_seq or 0)
                if seq > head.seq:
                    break  # appended after the head snapshot: not checked in this run
                if at_boundary and seq != expected and not reread:
                    boundary_gap = True  # archived meanwhile? re-read the ledger
                    break
                at_boundary = False
                problem = check_event(event, stream=stream, seq=expected, prev_hash=prev)
                if problem is not None:
                    return problem
                expected, prev = expected + 1, str(event.hash)
                report.database_events += 1
            if at_boundary and not reread and expected - 1 < head.seq:
                boundary_gap = True  # no event left in the database: archived meanwhile?
            if not boundary_gap:
                break
            reread = True
        last = expected - 1
        if head.seq != last:
            return (
                f"stream {stream}: chain ends at seq {last} but its head says {head.seq} "
                f"(event(s) {last + 1}..{head.seq} missing)"
            )
        if head.hash != prev:
            return f"stream {stream} seq {last}: last event does not match the chain head"
        return None

    def _verify_batch(
        self,
        batch: AuditArchiveBatch,
        stream: str,
        expected: int,
        prev: str,
        report: VerifyReport,
    ) -> tuple[int, str] | str:
        """Check one archived batch continuing the chain at ``expected``/``prev``: the
        next ``(expected, prev)``, or the problem found."""
        where = f"stream {stream} archive {batch.key}"
        if batch.first_seq != expected:
            return f"{where}: ledger starts at seq {batch.first_seq}, expected {expected}"
        info = self.storage.head(batch.key)
        if info is None:
            return f"{where}: object missing (seq {batch.first_seq}..{batch.last_seq})"
        try:
            data = self.storage.get(batch.key)
            events = list(read_archive_object(data))
        except (UserMgmtError, ValueError) as exc:
            return f"{where}: unreadable ({exc})"
        for event in events:
            problem = check_event(event, stream=stream, seq=expected, prev_hash=prev)
            if problem is not None:
                return f"{problem} [in {batch.key}]"
            expected, prev = expected + 1, str(event.hash)
            report.archived_events += 1
        if info.sha256 != batch.sha256 or info.size != batch.size:
            return f"{where}: object changed since archival (checksum differs from ledger)"
        if expected - 1 != batch.last_seq:
            return f"{where}: holds seq {batch.first_seq}..{expected - 1}, ledger says ..{batch.last_seq}"
        return expected, prev

    # --- export -------------------------------------------------------------------------

    def export(
        self,
        stream: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Canonical records of ``stream`` with ``since <= occurred_at < until``, from the
        archive then the database, in chain order. Memory: one archive object at a time."""

        def wanted(event: AuditEvent) -> bool:
            return (since is None or event.occurred_at >= since) and (
                until is None or event.occurred_at < until
            )

        after_seq = 0
        reread_at: int | None = None  # a gap already re-checked against the ledger
        while True:
            for batch in [b for b in self._batches(stream) if b.last_seq > after_seq]:
                if (since is not None and batch.max_occurred_at < since) or (
                    until is not None and batch.min_occurred_at >= until
                ):
                    after_seq = batch.last_seq
                    continue
                for event in read_archive_object(self.storage.get(batch.key)):
                    seq = int(event.chain_seq or 0)
                    if seq <= after_seq:
                        continue  # exported from the database before it was archived
                    after_seq = seq
                    if wanted(event):
                        yield event_record(event)
            gap = False
            for event in self._db_events(stream, after_seq):
                seq = int(event.chain_seq or 0)
                if seq != after_seq + 1 and reread_at != after_seq:
                    reread_at, gap = after_seq, True  # archived meanwhile? re-read the ledger
                    break
                after_seq = seq
                if wanted(event):
                    yield event_record(event)
            if not gap:
                return
