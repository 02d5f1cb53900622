"""The ``audit`` commands of the ``usermgmt`` command line.

::

    usermgmt audit archive [--dry-run]            # the daily job (cron-friendly)
    usermgmt audit verify [--org ID|platform]      # exit 0: intact, 1: a break (one line each)
    usermgmt audit export --org ID|platform [--since T] [--until T]   # JSON Lines on stdout

They need a SQL ``DATABASE_URL`` migrated to the newest revision and the configured
blob storage (``STORAGE_BACKEND``). ``archive`` draws a progress bar on stderr when
stderr is a terminal, and exits 1 if a stream could not be archived (its rows stay).
Bad arguments print one line and exit 2, like every command.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from typing import TYPE_CHECKING, TextIO
from uuid import UUID

from usermgmt.errors import ValidationError

if TYPE_CHECKING:
    from usermgmt.app import UserManagement

__all__ = ["ProgressBar", "add_commands"]

EXIT_PROBLEMS = 1


class ProgressBar:
    """``[#####.....]  45%  4500/10000 events`` redrawn with a carriage return."""

    def __init__(self, stream: TextIO, width: int = 30) -> None:
        self._stream = stream
        self._width = width
        self._drawn = False

    def __call__(self, done: int, total: int) -> None:
        fraction = 1.0 if total <= 0 else min(1.0, done / total)
        filled = int(self._width * fraction)
        bar = "#" * filled + "." * (self._width - filled)
        self._stream.write(f"\r[{bar}] {fraction:4.0%}  {done}/{total} events")
        self._stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self._stream.write("\n")
            self._stream.flush()


def _stream_arg(value: str) -> str:
    """An organization id (any UUID spelling) or ``platform``, as a stream name."""
    from usermgmt.audit_chain import PLATFORM_STREAM

    if value == PLATFORM_STREAM:
        return value
    try:
        return str(UUID(value))
    except ValueError:
        raise ValidationError(
            f"--org: {value!r} is not an organization id (a UUID) or 'platform'"
        ) from None


def _time_arg(name: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError(f"--{name}: {value!r} is not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        raise ValidationError(f"--{name} needs a timezone (e.g. 2026-01-01T00:00:00Z)")
    return parsed


def _open() -> tuple[UserManagement, str]:
    from usermgmt import cli

    settings = cli._settings()
    url = cli._sql_url(settings)
    with cli._database(url):
        cli._require_head(url)
    return cli._build(settings), url


def _archive(args: argparse.Namespace) -> int:
    from usermgmt import cli

    um, url = _open()
    bar = ProgressBar(sys.stderr) if sys.stderr.isatty() else None
    try:
        with cli._database(url):
            report = um.audit_archiver.archive(dry_run=args.dry_run, progress=bar)
    finally:
        if bar is not None:
            bar.close()
        um.close()
    verb = "would archive" if report.dry_run else "archived"
    print(
        f"{verb} {report.events} event(s) older than {report.cutoff.isoformat()} "
        f"in {report.batches} object(s)"
    )
    for problem in report.problems:
        print(f"usermgmt: error: {problem}", file=sys.stderr)
    return 0 if report.ok else EXIT_PROBLEMS


def _verify(args: argparse.Namespace) -> int:
    from usermgmt import cli

    stream = None if args.org is None else _stream_arg(args.org)
    um, url = _open()
    try:
        with cli._database(url):
            report = um.audit_archiver.verify(stream=stream)
    finally:
        um.close()
    for problem in report.problems:
        print(problem)
    state = "intact" if report.ok else f"{len(report.problems)} broken"
    print(
        f"{report.streams} chain(s) checked, {state}: {report.archived_events} archived "
        f"and {report.database_events} database event(s)",
        file=sys.stderr,
    )
    return 0 if report.ok else EXIT_PROBLEMS


def _export(args: argparse.Namespace) -> int:
    from usermgmt import cli
    from usermgmt.audit_chain import canonical_json

    stream = _stream_arg(args.org)
    since, until = _time_arg("since", args.since), _time_arg("until", args.until)
    if since is not None and until is not None and since >= until:
        raise ValidationError("--since must be before --until")
    um, url = _open()
    out = sys.stdout
    try:
        with cli._database(url):
            for record in um.audit_archiver.export(stream, since=since, until=until):
                out.write(canonical_json(record) + "\n")
    finally:
        um.close()
    out.flush()
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``audit archive|verify|export`` to the ``usermgmt`` parser."""
    audit = sub.add_parser("audit", help="audit trail: archive, verify, export")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True, metavar="AUDIT_COMMAND")
    archive = audit_sub.add_parser(
        "archive",
        help="move events older than AUDIT_ARCHIVE_AFTER_DAYS to blob storage (daily job)",
    )
    archive.add_argument(
        "--dry-run", action="store_true", help="count what would be archived; change nothing"
    )
    archive.set_defaults(run=_archive)
    verify = audit_sub.add_parser(
        "verify", help="check the hash chains across database and archive (exit 1 on a break)"
    )
    verify.add_argument("--org", metavar="ID", help="one organization id, or 'platform'")
    verify.set_defaults(run=_verify)
    export = audit_sub.add_parser(
        "export", help="one organization's events, archive then database, as JSON Lines"
    )
    export.add_argument("--org", metavar="ID", required=True, help="organization id or 'platform'")
    export.add_argument("--since", metavar="TIME", help="ISO 8601 with timezone, inclusive")
    export.add_argument("--until", metavar="TIME", help="ISO 8601 with timezone, exclusive")
    export.set_defaults(run=_export)
