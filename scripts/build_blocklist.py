"""Regenerate ``usermgmt/security/data/common-passwords.txt.gz`` from zxcvbn's list.

The source is the 30,000-entry ``passwords`` frequency list of the installed ``zxcvbn``
package (MIT, see ``usermgmt/security/data/NOTICE``). Entries are case-folded, entries
shorter than the lowest allowed minimum password length (8) are dropped (the length rule
rejects them anyway), duplicates are removed and frequency rank order is kept. The
output is byte-for-byte reproducible (gzip ``mtime=0``).

Usage::

    python scripts/build_blocklist.py            # rewrite the data file
    python scripts/build_blocklist.py --check    # exit 1 if the data file is stale

The runtime never imports zxcvbn; only this script does.
"""

from __future__ import annotations

import argparse
import gzip
import io
import sys
import unicodedata
from pathlib import Path

#: The lowest PASSWORD_MIN_LENGTH the settings accept; shorter entries can never matter.
MIN_ENTRY_LENGTH = 8
DEFAULT_OUTPUT = (
    Path(__file__).resolve().parent.parent
    / "usermgmt"
    / "security"
    / "data"
    / "common-passwords.txt.gz"
)


def source_entries() -> list[str]:
    """zxcvbn's password list in rank order. Raises SystemExit if zxcvbn is missing."""
    try:
        from zxcvbn import frequency_lists  # build-time only dependency
    except ImportError:
        raise SystemExit("zxcvbn is not installed: pip install zxcvbn") from None
    raw = frequency_lists.FREQUENCY_LISTS["passwords"]
    return raw.split(",") if isinstance(raw, str) else list(raw)


def build(entries: list[str], min_length: int = MIN_ENTRY_LENGTH) -> bytes:
    """The gzip-compressed, newline-separated, de-duplicated list."""
    seen: set[str] = set()
    kept: list[str] = []
    for entry in entries:
        # Same normalisation as CommonPasswords.__contains__ (NFKC, then casefold).
        word = unicodedata.normalize("NFKC", entry.strip()).casefold()
        if len(word) < min_length or word in seen or "\n" in word:
            continue
        seen.add(word)
        kept.append(word)
    text = "".join(f"{word}\n" for word in kept).encode("utf-8")
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=9, mtime=0) as stream:
        stream.write(text)
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--min-length", type=int, default=MIN_ENTRY_LENGTH)
    parser.add_argument("--check", action="store_true", help="fail if the file is stale")
    args = parser.parse_args(argv)

    data = build(source_entries(), args.min_length)
    if args.check:
        current = args.output.read_bytes() if args.output.exists() else b""
        if current != data:
            print(f"{args.output} is stale: run scripts/build_blocklist.py", file=sys.stderr)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(data)
    count = gzip.decompress(data).count(b"\n")
    print(f"wrote {count} entries ({len(data)} bytes) to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
