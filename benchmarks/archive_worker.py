"""One measured archival run in a fresh process (started by ``test_audit_archive.py``).

``python benchmarks/archive_worker.py archiver|pipeline`` with the environment:

``BENCH_DATABASE_URL``  PostgreSQL URL (``postgresql://...``)
``BENCH_S3_ENDPOINT``, ``BENCH_S3_BUCKET``, ``BENCH_S3_REGION``  moto's S3
``BENCH_PROFILE``       optional: write a cProfile dump there

``archiver`` runs ``UserManagement(settings).audit_archiver.archive()``: the real thing
(read pages, check the chain, gzip JSON Lines, upload with checksum, HEAD, ledger row
and DELETE in one transaction). ``pipeline`` is the floor of any archiver: a
server-side cursor → canonical JSON lines → gzip → S3 (checksummed, write-once), with
no chain check, no HEAD and no DELETE.

Imports and set-up are not timed. Prints one JSON object: events, objects, seconds and
cpu_seconds of the run, and the process's peak RSS (``VmHWM``, set-up included).
``BENCH_PROGRESS`` (a file) gets a line every 10 s from the archiver run.
"""

from __future__ import annotations

import cProfile
import gzip
import hashlib
import io
import json
import os
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

BATCH = 50_000


def _settings() -> Any:
    from usermgmt import Settings

    url = os.environ["BENCH_DATABASE_URL"].replace("postgresql://", "postgresql+psycopg://", 1)
    return Settings(
        _env_file=None,
        environment="test",
        database_url=url,
        storage_backend="s3",
        aws_s3_bucket=os.environ["BENCH_S3_BUCKET"],
        aws_s3_region=os.environ["BENCH_S3_REGION"],
        aws_endpoint_url=os.environ["BENCH_S3_ENDPOINT"],
        aws_access_key_id="bench",
        aws_secret_access_key="bench-secret",
        audit_archive_after_days=30,
    )


def _status_mib(field: str) -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def _rss_mib() -> float:
    return _status_mib("VmRSS")


def _peak_rss_mib() -> float:
    """The peak RSS of this process: ``VmHWM`` (Linux). Not ``ru_maxrss``: Linux carries
    the parent's RSS at fork time into the child's ``ru_maxrss`` across ``exec``."""
    if os.path.exists("/proc/self/status"):
        return _status_mib("VmHWM")
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # pragma: no cover


def prepare_archiver() -> Callable[[], dict[str, Any]]:
    from usermgmt import UserManagement

    archiver = UserManagement(_settings()).audit_archiver
    progress_path = os.environ.get("BENCH_PROGRESS")
    started = time.perf_counter()
    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.perf_counter() - started
        if progress_path and (now - last[0] >= 10 or done == total):
            last[0] = now
            with open(progress_path, "a", encoding="utf-8") as out:
                out.write(
                    f"{time.strftime('%H:%M:%S')} {done}/{total} events in {now:.0f} s "
                    f"({done / max(now, 1e-9):.0f}/s, cpu {time.process_time():.0f} s, "
                    f"rss {_rss_mib():.0f} MiB, load {os.getloadavg()[0]:.1f})\n"
                )

    def run() -> dict[str, Any]:
        report = archiver.archive(progress=progress if progress_path else None)
        return {
            "events": report.events,
            "objects": report.batches,
            "problems": report.problems[:5],
        }

    return run


def prepare_pipeline() -> Callable[[], dict[str, Any]]:
    return run_pipeline


def run_pipeline() -> dict[str, Any]:
    import psycopg

    from usermgmt.audit_chain import canonical_json, event_record
    from usermgmt.backends.storage.s3 import build
    from usermgmt.models import AuditEvent

    storage = build(_settings())
    columns = (
        "id, occurred_at, action, actor_user_id, organization_id, outcome, target_type, "
        "target_id, ip, user_agent, request_id, metadata, chain_seq, prev_hash, hash"
    )
    names = [c.strip() for c in columns.split(",")]
    events = objects = 0
    with psycopg.connect(os.environ["BENCH_DATABASE_URL"]) as connection:
        cursor = connection.cursor(name="archive_floor")
        cursor.itersize = 5000
        cursor.execute(
            f"SELECT {columns} FROM audit_logs ORDER BY organization_id, chain_seq"  # noqa: S608
        )
        buffer = io.BytesIO()
        packer = gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0, compresslevel=6)
        count = 0
        for row in cursor:
            values = dict(zip(names, row, strict=True))
            event = AuditEvent(**values)
            packer.write(canonical_json(event_record(event)).encode() + b"\n")
            count += 1
            if count == BATCH:
                packer.close()
                data = buffer.getvalue()
                storage.put(
                    f"floor/{objects:08d}.jsonl.gz",
                    data,
                    content_type="application/gzip",
                    checksum_sha256=hashlib.sha256(data).hexdigest(),
                )
                events, objects, count = events + count, objects + 1, 0
                buffer = io.BytesIO()
                packer = gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0, compresslevel=6)
        packer.close()
        if count:
            data = buffer.getvalue()
            storage.put(f"floor/{objects:08d}.jsonl.gz", data, content_type="application/gzip")
            events, objects = events + count, objects + 1
    return {"events": events, "objects": objects, "problems": []}


def prepare_fast() -> Callable[[], dict[str, Any]]:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from fast_pipeline import run_fast

    from usermgmt.backends.storage.s3 import build

    storage = build(_settings())
    return lambda: run_fast(storage)


def main() -> None:
    mode = sys.argv[1]
    prepare = {"archiver": prepare_archiver, "pipeline": prepare_pipeline, "fast": prepare_fast}
    work = prepare[mode]()
    setup_peak = _peak_rss_mib()
    profile_path = os.environ.get("BENCH_PROFILE")
    profiler = cProfile.Profile() if profile_path else None
    result_load = os.getloadavg()[0]
    start = time.perf_counter()
    cpu_start = time.process_time()
    if profiler is not None:
        profiler.enable()
    result = work()
    result["loadavg_1m_start"] = result_load
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(f"{profile_path}.{mode}")
    result["loadavg_1m_end"] = os.getloadavg()[0]
    result["seconds"] = time.perf_counter() - start
    result["cpu_seconds"] = time.process_time() - cpu_start
    result["peak_rss_mib"] = _peak_rss_mib()
    result["setup_peak_rss_mib"] = setup_peak
    result["end_rss_mib"] = _rss_mib()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
