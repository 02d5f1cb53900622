"""Audit archival benchmark: PostgreSQL → gzip JSON Lines → S3 (moto, Object Lock bucket).

Run with ``nox -s bench_archive`` (or ``python -m pytest benchmarks/test_audit_archive.py
-p no:cacheprovider -s``). Target (issue "Audit trail"): archive 10,000,000 events at
**≥ 50,000 events/s** with a **peak RSS < 200 MB**.

Environment:

``USERMGMT_BENCH_EVENTS``   events to load and archive (default 10,000,000;
                            ``200000`` for a quick run)
``USERMGMT_BENCH_STREAMS``  organizations (hash chains) they are spread over (default 20)
``USERMGMT_BENCH_DAYS``     days they are spread over (default 10; the archiver cuts
                            objects at day boundaries and at 50,000 events)
``USERMGMT_BENCH_PROFILE``  a path prefix: also write cProfile dumps of the runs there
``USERMGMT_TEST_DATABASE_URL``  an existing PostgreSQL instead of a private one
``USERMGMT_BENCH_PGDATA``   a directory (outside the repository, e.g. /work/benchdata/pg):
                            a PostgreSQL cluster kept there between runs. The events are
                            loaded once into a template database (one per events /
                            streams / days / generator version); every run archives a
                            copy of it (``CREATE DATABASE ... TEMPLATE``, seconds instead
                            of the load's minutes). ``python benchmarks/test_audit_archive.py``
                            only loads the template.

The events are generated with valid hash chains and loaded with ``COPY`` by one
process per core (indexes dropped during the load and rebuilt after), then archived by
a fresh process, so its peak RSS (``VmHWM``) is the archiver's own. Two runs are
measured: ``pipeline`` (the floor: server-side cursor → canonical JSON → gzip → S3,
nothing else) on the loaded rows, then the real archiver (chain check, upload with
checksum, HEAD, ledger row and DELETE per object), which empties the table.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the tests package (PostgreSQL and port helpers)
    sys.path.insert(0, str(ROOT))

from tests.email import free_port  # noqa: E402
from tests.sql.conftest import _private_server  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::pytest_benchmark.logger.PytestBenchmarkWarning")

EVENTS = int(os.environ.get("USERMGMT_BENCH_EVENTS", "10000000"))
STREAMS = int(os.environ.get("USERMGMT_BENCH_STREAMS", "20"))
DAYS = int(os.environ.get("USERMGMT_BENCH_DAYS", "10"))
PROFILE = os.environ.get("USERMGMT_BENCH_PROFILE")
PGDATA = os.environ.get("USERMGMT_BENCH_PGDATA")
#: Part of the template database's name: bump it when the generated events change.
GENERATOR_VERSION = 1
#: Also measure the floor pipeline (default: yes up to 1,000,000 events).
PIPELINE = os.environ.get("USERMGMT_BENCH_PIPELINE", "1" if EVENTS <= 1_000_000 else "0") == "1"
#: Where the archiver run reports progress (events, seconds, RSS) while it runs.
PROGRESS = os.environ.get("USERMGMT_BENCH_PROGRESS")
TARGET_EVENTS_PER_SECOND = 50_000
TARGET_PEAK_RSS_MIB = 200
REGION = "eu-west-1"
BUCKET = "usermgmt-bench-archive"
#: The events are this old at the newest (the archiver's cutoff is 30 days).
NEWEST_AGE = timedelta(days=40)

COLUMNS = (
    "id",
    "occurred_at",
    "action",
    "actor_user_id",
    "organization_id",
    "outcome",
    "target_type",
    "target_id",
    "ip",
    "user_agent",
    "request_id",
    "metadata",
    "chain_seq",
    "prev_hash",
    "hash",
)
ACTIONS = ("member.added", "member.role_changed", "user.login", "session.revoked")


# --- servers -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    given = os.environ.get("USERMGMT_TEST_DATABASE_URL")
    if given:
        yield given.replace("postgresql+psycopg://", "postgresql://", 1)
        return
    if PGDATA:
        with _persistent_server(Path(PGDATA)) as url:
            yield url
        return
    with _private_server() as url:
        yield url


@contextlib.contextmanager
def _persistent_server(data: Path) -> Iterator[str]:
    """A PostgreSQL cluster in ``data`` (created there the first time), started on a free
    loopback port for the run and stopped (cleanly: the data stays) afterwards."""
    from tests.sql.conftest import _pg_bin, _run

    bin_dir = _pg_bin()
    if bin_dir is None:
        raise RuntimeError("no PostgreSQL binaries")
    as_postgres = os.geteuid() == 0  # PostgreSQL refuses to run as root
    socket_dir = Path(tempfile.mkdtemp(prefix="usermgmt-bench-pg-"))
    if as_postgres:
        socket_dir.chmod(0o777)
    if not (data / "PG_VERSION").exists():
        data.mkdir(parents=True, exist_ok=True)
        if as_postgres:
            shutil.chown(data, "postgres", "postgres")
        command = [str(bin_dir / "initdb"), "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8"]
        done = _run(
            [*command, "--no-sync", "-U", "postgres", "-D", str(data)], as_postgres=as_postgres
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stderr.strip()[-500:]}")
    port = free_port()
    options = (
        f"-c listen_addresses=127.0.0.1 -p {port} -k {socket_dir} -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off -c max_connections=100 "
        "-c max_wal_size=8GB -c shared_buffers=256MB"
    )
    pg_ctl = [str(bin_dir / "pg_ctl"), "-w", "-t", "120", "-D", str(data)]
    log = data / "server.log"
    started = _run([*pg_ctl, "-l", str(log), "-o", options, "start"], as_postgres=as_postgres)
    if started.returncode != 0:
        raise RuntimeError(f"pg_ctl start failed: {started.stderr.strip()[-500:]}")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        _run([*pg_ctl, "-m", "fast", "stop"], as_postgres=as_postgres)
        shutil.rmtree(socket_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.session.Session().client(
        "s3",
        region_name=REGION,
        endpoint_url=endpoint,
        aws_access_key_id="bench",
        aws_secret_access_key="bench-secret",
    )
    client.create_bucket(
        Bucket=BUCKET,
        CreateBucketConfiguration={"LocationConstraint": REGION},
        ObjectLockEnabledForBucket=True,
    )
    client.put_object_lock_configuration(
        Bucket=BUCKET,
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}},
        },
    )
    try:
        yield endpoint
    finally:
        server.stop()


# --- loading ---------------------------------------------------------------------------------


class _Template:
    """The canonical JSON of an event (without ``hash``) with holes for what varies, taken
    from :mod:`usermgmt.audit_chain` itself so the hashes are the ones it computes."""

    SENTINELS = {
        "id": "00000000-0000-4000-8000-00000000a001",
        "actor": "00000000-0000-4000-8000-00000000a002",
        "org": "00000000-0000-4000-8000-00000000a003",
        "action": "sentinel.action",
        "target": "sentinel-target",
        "request": "sentinel-request",
        "prev": "f" * 64,
        "seq": "987654321",
        "n": "123456789",
        "at": "2001-02-03T04:05:06.789012Z",
    }

    def __init__(self) -> None:
        from usermgmt.audit_chain import canonical_json, event_record
        from usermgmt.models import AuditEvent

        s = self.SENTINELS
        sample = AuditEvent(
            id=uuid.UUID(s["id"]),
            occurred_at=datetime(2001, 2, 3, 4, 5, 6, 789012, tzinfo=UTC),
            action=s["action"],
            actor_user_id=uuid.UUID(s["actor"]),
            organization_id=uuid.UUID(s["org"]),
            outcome="success",
            target_type="user",
            target_id=s["target"],
            ip="203.0.113.7",
            user_agent="Mozilla/5.0 (X11; Linux x86_64) bench/1.0",
            request_id=s["request"],
            metadata={"n": int(s["n"]), "roles": ["admin"]},
            chain_seq=int(s["seq"]),
            prev_hash=s["prev"],
        )
        record = event_record(sample)
        del record["hash"]
        text = canonical_json(record)
        self.parts: list[str] = []
        self.holes: list[str] = []
        positions = []
        for name, value in s.items():
            at = text.find(value)
            while at >= 0:
                positions.append((at, name))
                at = text.find(value, at + len(value))
        positions.sort()
        cursor = 0
        for position, name in positions:
            self.parts.append(text[cursor:position])
            self.holes.append(name)
            cursor = position + len(s[name])
        self.tail = text[cursor:]
        for name, value in s.items():  # every sentinel appears, and once per field
            assert text.count(value) == (2 if name == "org" else 1), (name, text)
        self.sample = sample

    def render(self, values: dict[str, str]) -> str:
        out = []
        for part, hole in zip(self.parts, self.holes, strict=True):
            out.append(part)
            out.append(values[hole])
        out.append(self.tail)
        return "".join(out)


def _stream_rows(template: _Template, index: int, count: int, start: datetime) -> Iterator[str]:
    """COPY text lines of stream ``index``: ``count`` chained events from ``start`` on."""
    org = str(uuid.UUID(int=(0xB0 << 120) | (index << 64)))
    actor = str(uuid.UUID(int=(0xA0 << 120) | (index << 64)))
    step = (DAYS * 86_400_000_000 - 1) // max(count, 1)  # microseconds between events
    prev = "0" * 64
    values = {"org": org, "actor": actor}
    for seq in range(1, count + 1):
        at = start + timedelta(microseconds=seq * step)
        at_text = at.isoformat(timespec="microseconds")  # ...+00:00
        event_id = str(uuid.UUID(int=(0xE0 << 120) | (index << 64) | seq))
        action = ACTIONS[seq % 4]
        target = f"user-{seq % 977}"
        request = f"req-{index}-{seq}"
        values.update(
            id=event_id,
            action=action,
            target=target,
            request=request,
            prev=prev,
            seq=str(seq),
            n=str(seq),
            at=at_text[:-6] + "Z",
        )
        digest = hashlib.sha256(template.render(values).encode()).hexdigest()
        metadata = f'{{"n": {seq}, "roles": ["admin"]}}'
        yield (
            f"{event_id}\t{at_text}\t{action}\t{actor}\t{org}\tsuccess\tuser\t"
            f"{target}\t203.0.113.7\tMozilla/5.0 (X11; Linux x86_64) bench/1.0\t{request}\t"
            f"{metadata}\t{seq}\t{prev}\t{digest}\n"
        )
        prev = digest
    _HEADS[index] = (org, count, prev)


_HEADS: dict[int, tuple[str, int, str]] = {}


def _load_streams(args: tuple[str, list[tuple[int, int]], str]) -> list[tuple[str, int, str]]:
    """Worker process: generate and COPY some streams; their (stream, seq, hash) heads."""
    import psycopg

    url, streams, start_iso = args
    start = datetime.fromisoformat(start_iso)
    template = _Template()
    heads = []
    with psycopg.connect(url) as connection, connection.cursor() as cursor:
        statement = f"COPY audit_logs ({', '.join(COLUMNS)}) FROM STDIN"
        with cursor.copy(statement) as copy:
            for index, count in streams:
                chunk: list[str] = []
                for line in _stream_rows(template, index, count, start):
                    chunk.append(line)
                    if len(chunk) == 20_000:
                        copy.write("".join(chunk).encode())
                        chunk.clear()
                if chunk:
                    copy.write("".join(chunk).encode())
                heads.append(_HEADS[index])
    return heads


def _check_template_against_the_chain() -> None:
    """The generated hash of a few events is the one audit_chain computes."""
    from usermgmt.audit_chain import GENESIS_HASH, chain_event

    template = _Template()
    start = datetime(2020, 1, 1, tzinfo=UTC)
    lines = list(_stream_rows(template, 3, 3, start))
    prev = GENESIS_HASH
    for seq, line in enumerate(lines, 1):
        fields = line.rstrip("\n").split("\t")
        event = replace(
            template.sample,
            id=uuid.UUID(fields[0]),
            occurred_at=datetime.fromisoformat(fields[1]),
            action=fields[2],
            actor_user_id=uuid.UUID(fields[3]),
            organization_id=uuid.UUID(fields[4]),
            target_id=fields[7],
            request_id=fields[10],
            metadata=json.loads(fields[11]),
        )
        chained = chain_event(event, seq, prev)
        assert chained.hash == fields[14], "the generator no longer matches audit_chain"
        prev = fields[14]


def load_events(url: str, total: int, streams: int) -> float:
    """Migrate, then load ``total`` chained events over ``streams`` organizations; seconds."""
    import psycopg

    from usermgmt.backends.sqlalchemy import migrate

    _check_template_against_the_chain()
    started = time.perf_counter()
    migrate.upgrade(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("TRUNCATE audit_logs, audit_chain_heads, audit_archive_batches")
        indexes = [
            (name, definition)
            for name, definition in connection.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'audit_logs' "
                "AND indexname NOT IN (SELECT conname FROM pg_constraint)"
            )
        ]
        for name, _ in indexes:
            connection.execute(f'DROP INDEX "{name}"')
    per_stream = [total // streams + (1 if i < total % streams else 0) for i in range(streams)]
    start = datetime.now(UTC) - NEWEST_AGE - timedelta(days=DAYS)
    workers = max(1, min(os.cpu_count() or 1, streams))
    shares: list[list[tuple[int, int]]] = [[] for _ in range(workers)]
    for index, count in enumerate(per_stream):
        shares[index % workers].append((index, count))
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers) as pool:
        heads = [
            head
            for part in pool.map(_load_streams, [(url, s, start.isoformat()) for s in shares])
            for head in part
        ]
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("SET maintenance_work_mem = '256MB'")
        for _, definition in indexes:
            connection.execute(definition)
        with connection.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO audit_chain_heads (stream, seq, hash) VALUES (%s, %s, %s)", heads
            )
        connection.execute("VACUUM ANALYZE audit_logs")
        row = connection.execute("SELECT count(*) FROM audit_logs").fetchone()
        assert row is not None
        assert row[0] == total
    return time.perf_counter() - started


def _database_url(server_url: str, name: str) -> str:
    return server_url.rsplit("/", 1)[0] + f"/{name}"


def template_name() -> str:
    return f"usermgmt_bench_g{GENERATOR_VERSION}_{EVENTS}_{STREAMS}_{DAYS}"


def ensure_template(server_url: str) -> float:
    """Load the events into the template database unless it exists; seconds spent.

    Loaded under a temporary name and renamed when complete, so an interrupted load is
    never taken for a template."""
    import psycopg

    name = template_name()
    loading = f"{name}_loading"
    with psycopg.connect(server_url, autocommit=True) as connection:
        found = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        if found.fetchone() is not None:
            return 0.0
        connection.execute(f'DROP DATABASE IF EXISTS "{loading}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{loading}"')
    seconds = load_events(_database_url(server_url, loading), EVENTS, STREAMS)
    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(f'ALTER DATABASE "{loading}" RENAME TO "{name}"')
    return seconds


def copy_template(server_url: str, database: str) -> float:
    """``database`` as a fresh copy of the template (migrated to head); seconds."""
    import psycopg

    from usermgmt.backends.sqlalchemy import migrate

    started = time.perf_counter()
    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(
            f'CREATE DATABASE "{database}" TEMPLATE "{template_name()}" STRATEGY FILE_COPY'
        )
    url = _database_url(server_url, database)
    migrate.upgrade(url.replace("postgresql://", "postgresql+psycopg://", 1))
    return time.perf_counter() - started


# --- the measured runs -------------------------------------------------------------------------


def run_worker(mode: str, url: str, endpoint: str) -> dict[str, Any]:
    env = dict(os.environ)
    env.update(
        BENCH_DATABASE_URL=url,
        BENCH_S3_ENDPOINT=endpoint,
        BENCH_S3_BUCKET=BUCKET,
        BENCH_S3_REGION=REGION,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
    )
    for name, value in (("BENCH_PROFILE", PROFILE), ("BENCH_PROGRESS", PROGRESS)):
        if value:
            env[name] = value
        else:
            env.pop(name, None)
    server_cpu = _postgres_cpu(url)
    moto_cpu = time.process_time()  # this process does nothing else meanwhile
    completed = subprocess.run(  # noqa: S603 - our own script
        [sys.executable, str(Path(__file__).with_name("archive_worker.py")), mode],
        env=env,
        capture_output=True,
        text=True,
        timeout=6 * 3600,
        check=False,
    )
    if completed.returncode != 0:
        pytest.fail(f"{mode} run failed:\n{completed.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    result["events_per_second"] = result["events"] / result["seconds"]
    result["s3_cpu_seconds"] = time.process_time() - moto_cpu
    if server_cpu is not None:
        time.sleep(1)  # the run's backends have exited; the postmaster reaps them
        after = _postgres_cpu(url)
        result["pg_cpu_seconds"] = None if after is None else after - server_cpu
    return result


def _postgres_cpu(url: str) -> float | None:
    """CPU seconds used so far by the PostgreSQL server on this machine: the postmaster
    and its children, live (but this one) and exited (its ``cutime``/``cstime``); None
    if the server is not local."""
    import psycopg

    with psycopg.connect(url) as connection:
        row = connection.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    try:
        status = Path(f"/proc/{row[0]}/status").read_text()
        postmaster = int(next(x for x in status.splitlines() if x.startswith("PPid:")).split()[1])
        tick = os.sysconf("SC_CLK_TCK")

        def stat(pid: int, children: bool) -> int:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            own = int(fields[11]) + int(fields[12])
            return own + (int(fields[13]) + int(fields[14]) if children else 0)

        total = stat(postmaster, True)
        for child in Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split():
            if int(child) != row[0]:
                with contextlib.suppress(OSError):
                    total += stat(int(child), False)
    except (OSError, StopIteration, ValueError):
        return None
    return total / tick


def _table(rows: list[tuple[str, dict[str, Any]]], load_seconds: float) -> str:
    lines = [
        (
            f"audit archival: {EVENTS:,} events, {STREAMS} streams over {DAYS} days "
            f"(loaded in {load_seconds:.0f} s)"
        ),
        (
            f"{'run':<10} {'events':>12} {'objects':>8} {'seconds':>9} {'events/s':>10} "
            f"{'cpu s':>8} {'ev/cpu-s':>9} {'peak RSS':>10} {'(set-up)':>10}"
        ),
    ]
    for name, r in rows:
        lines.append(
            f"{name:<10} {r['events']:>12,} {r['objects']:>8,} {r['seconds']:>9.1f} "
            f"{r['events_per_second']:>10,.0f} {r['cpu_seconds']:>8.1f} "
            f"{r['events'] / max(r['cpu_seconds'], 1e-9):>9,.0f} "
            f"{r['peak_rss_mib']:>6.0f} MiB {r['setup_peak_rss_mib']:>6.0f} MiB"
            f"  load {r['loadavg_1m_start']:.1f} -> {r['loadavg_1m_end']:.1f}"
        )
        pg = r.get("pg_cpu_seconds")
        if pg is not None:
            everything = r["cpu_seconds"] + pg + r["s3_cpu_seconds"]
            lines.append(
                f"{'':<10} CPU µs/event: archiver {r['cpu_seconds'] / r['events'] * 1e6:.1f}, "
                f"PostgreSQL {pg / r['events'] * 1e6:.1f}, moto "
                f"{r['s3_cpu_seconds'] / r['events'] * 1e6:.1f}; all "
                f"{everything / r['events'] * 1e6:.1f} ({r['events'] / everything:,.0f} "
                "events per CPU-second)"
            )
    lines.append(
        f"target: >= {TARGET_EVENTS_PER_SECOND:,} events/s, peak RSS < {TARGET_PEAK_RSS_MIB} MiB"
    )
    return "\n".join(lines)


@pytest.mark.timeout(8 * 3600)  # loading and archiving 10M events takes a while
def test_archive_events_from_postgresql_to_s3(
    benchmark: Any, pg_url: str, s3_endpoint: str
) -> None:
    database = f"usermgmt_bench_{os.getpid()}"
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{database}"')
        if not PGDATA:
            connection.execute(f'CREATE DATABASE "{database}"')
    url = _database_url(pg_url, database)
    try:
        if PGDATA:
            load_seconds = ensure_template(pg_url)
            copy_seconds = copy_template(pg_url, database)
            print(f"\ntemplate loaded in {load_seconds:.0f} s, copied in {copy_seconds:.0f} s")
        else:
            load_seconds = load_events(url, EVENTS, STREAMS)
        floor = run_worker("pipeline", url, s3_endpoint) if PIPELINE else None
        fast = run_worker("fast", url, s3_endpoint) if PIPELINE else None
        results: list[dict[str, Any]] = []
        benchmark.pedantic(
            lambda: results.append(run_worker("archiver", url, s3_endpoint)),
            rounds=1,
            iterations=1,
        )
        archiver = results[0]
        rows = [("pipeline", floor), ("fast", fast)] if floor and fast else []
        print("\n" + _table([*rows, ("archiver", archiver)], load_seconds))
        benchmark.extra_info.update(
            {
                "pipeline": floor,
                "fast": fast,
                "archiver": archiver,
                "events": EVENTS,
                "streams": STREAMS,
            }
        )
        assert floor is None or floor["events"] == EVENTS
        assert fast is None or fast["events"] == EVENTS
        assert archiver["problems"] == []
        assert archiver["events"] == EVENTS
        with psycopg.connect(url) as connection:
            row = connection.execute("SELECT count(*) FROM audit_logs").fetchone()
            assert row is not None
            assert row[0] == 0  # every event was archived and deleted
        assert archiver["peak_rss_mib"] < TARGET_PEAK_RSS_MIB
        assert archiver["events_per_second"] >= TARGET_EVENTS_PER_SECOND
    finally:
        with contextlib.suppress(Exception), psycopg.connect(pg_url, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


if __name__ == "__main__":  # load the template database only (USERMGMT_BENCH_PGDATA)
    if not PGDATA:
        sys.exit("set USERMGMT_BENCH_PGDATA")
    with _persistent_server(Path(PGDATA)) as server:
        print(f"{template_name()}: loaded in {ensure_template(server):.0f} s")
