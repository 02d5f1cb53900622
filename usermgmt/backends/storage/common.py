"""What every blob storage backend shares: key rules and the checksum check."""

from __future__ import annotations

import hashlib

from usermgmt.errors import BlobIntegrityError, ValidationError

__all__ = ["DEFAULT_CONTENT_TYPE", "META_DIR", "check_checksum", "validate_blob_key"]

DEFAULT_CONTENT_TYPE = "application/octet-stream"
#: Sidecars and temporary files of the local backend; refused as a key's first segment.
META_DIR = ".usermgmt-meta"
_META_DIR = META_DIR


def validate_blob_key(key: str) -> str:
    """Return ``key`` if it is a safe relative key such as ``org/2026/01/batch-1.jsonl.gz``.

    Raises :class:`~usermgmt.errors.ValidationError` for an empty or absolute key,
    a backslash or NUL, an empty, ``.`` or ``..`` segment, or the reserved
    ``.usermgmt-meta`` first segment.
    """
    if not key or "\\" in key or "\x00" in key:
        raise ValidationError("invalid blob key: empty, or contains a backslash or NUL")
    if key.startswith("/") or (len(key) > 1 and key[1] == ":"):
        raise ValidationError("invalid blob key: must be relative")
    segments = key.split("/")
    if any(s in {"", ".", ".."} for s in segments):
        raise ValidationError("invalid blob key: empty, '.' or '..' segment")
    if segments[0] == _META_DIR:
        raise ValidationError(f"invalid blob key: {_META_DIR!r} is reserved")
    return key


def check_checksum(key: str, data: bytes, checksum_sha256: str | None) -> None:
    """Raise BlobIntegrityError if ``checksum_sha256`` is given and is not the data's SHA-256."""
    if checksum_sha256 is not None and hashlib.sha256(data).hexdigest() != checksum_sha256.lower():
        raise BlobIntegrityError(f"blob {key!r}: SHA-256 checksum does not match the data")
