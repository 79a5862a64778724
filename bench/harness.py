"""The benchmark's edge: the stack, fresh databases and topics, child processes, RSS sampling and
the database queries the figures come from. bench/run.py wires these into measurements."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import platform
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil
import psycopg2

from stack.apache_kafka import KAFKA_POM, pom_kafka_version
from stack.common import cache_dir
from stack.orchestrator import LocalStack, StackEnv
from utils import schema
from utils.config import PostgresSettings, Settings, load_settings, settings_to_env
from utils.errors import StackError

log = logging.getLogger("bench")

REPO = Path(__file__).resolve().parents[1]
CONSUMER_SCRIPT = REPO / "consumer" / "transaction_processor.py"
NAIVE_SCRIPT = REPO / "bench" / "naive_consumer.py"
FLOOR_SCRIPT = REPO / "bench" / "latency_floor.py"
BENCH_PORTS = {"zk_port": 42181, "kafka_port": 49092, "pg_port": 45432}


# ------------------------------------------------------------------------------------ stack


@dataclasses.dataclass(slots=True)
class Services:
    env: StackEnv
    stack: LocalStack
    started: list[str]  # components this run started (stopped again at the end)
    kafka_mode: str  # "local" or "external"
    postgres_mode: str


def _configured(name: str) -> bool:
    return bool(os.environ.get(name, "").strip())


def open_services(
    state_dir: Path | None, ports: dict[str, int] | None = None, *, kafka_brokers: int | None = None
) -> Services:
    """The bench's own LocalStack, or the configured Kafka / PostgreSQL where they are set and answer.

    Only the process environment counts (not `.env`): a developer's `.env` pointing at the dev
    stack must not send a benchmark's million rows there by accident.
    """
    ports = {**BENCH_PORTS, **(ports or {})}
    base = load_settings(
        environ={k: v for k, v in os.environ.items() if k.startswith(("POSTGRES_", "KAFKA_"))}
    )
    stack = LocalStack(
        state_dir or cache_dir() / "bench-stack",
        existing_kafka=base.kafka.bootstrap_servers if _configured("KAFKA_BOOTSTRAP_SERVERS") else None,
        existing_postgres=base.postgres if _configured("POSTGRES_HOST") else None,
        existing_kafka_settings=base.kafka,
        zk_port=ports["zk_port"],
        kafka_port=ports["kafka_port"],
        pg_port=ports["pg_port"],
        kafka_brokers=kafka_brokers,  # None: TXMON_KAFKA_BROKERS (default 1)
    )
    names = ("kafka", "zookeeper", "postgres")  # the order to stop them in
    running_before = {n for n in names if stack.pid(n) is not None}
    try:
        env = stack.up()
    except BaseException:
        # A bench that cannot start its stack stops what it started on the way (PostgreSQL
        # starts first, so a broker's port clash would otherwise leave it and ZooKeeper behind).
        for name in names:
            if name not in running_before and stack.pid(name) is not None:
                log.info("stopping %s: the bench stack did not come up", name)
                stack.stop_component(name)
        raise
    running_after = {n for n in names if stack.pid(n) is not None}
    modes = {c.name: c.mode for c in stack.status()}
    return Services(
        env=env,
        stack=stack,
        started=sorted(running_after - running_before),
        kafka_mode=modes.get("kafka", "local"),
        postgres_mode=modes.get("postgres", "local"),
    )


def close_services(services: Services, keep: bool) -> None:
    if services.started and not keep:
        log.info("stopping the bench stack (%s)", ", ".join(services.started))
        services.stack.down()
    elif services.started:
        log.info("leaving the bench stack running (--keep-stack); stop it with the same state dir")


# ------------------------------------------------------------------------------------ machine


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_info(services: Services) -> dict[str, Any]:
    """What a result needs to be compared with another: hardware, versions, the code measured."""
    import hashlib

    import kafka

    code_dirs = ("consumer", "utils", "producer")
    diff = _git("diff", "HEAD", "--", *code_dirs)
    for name in _git("ls-files", "--others", "--exclude-standard", "--", *code_dirs).splitlines():
        with contextlib.suppress(OSError):
            diff += f"\n{name}\n" + (REPO / name).read_text(errors="replace")
    pg_version = ""
    with contextlib.suppress(psycopg2.Error):
        conn = psycopg2.connect(services.env.postgres_settings().dsn(migration=True))
        try:
            pg_version = _server_version(conn)
        finally:
            conn.close()
    kafka_version = ""
    if services.kafka_mode == "local":
        with contextlib.suppress(Exception):
            kafka_version = pom_kafka_version(KAFKA_POM.read_text())
    else:
        kafka_version = "external"
    return {
        "nproc": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "loadavg_start": round(os.getloadavg()[0], 2),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "kafka_python": kafka.__version__,
        "crc32c": _has_module("crc32c"),
        "kafka": kafka_version,
        "postgres": pg_version,
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(diff),
        # Tells two uncommitted variants of the pipeline apart (tracked changes + untracked files).
        "pipeline_diff_sha": hashlib.sha256(diff.encode()).hexdigest()[:12] if diff else None,
        "stack": {"kafka": services.kafka_mode, "postgres": services.postgres_mode},
    }


def _server_version(conn: psycopg2.extensions.connection) -> str:
    with conn.cursor() as cur:
        cur.execute("SHOW server_version")
        return str(cur.fetchone()[0])


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


# ------------------------------------------------------------------------------------ workspace


class Workspace:
    """Fresh databases and topics per measurement, named after the run; dropped afterwards."""

    def __init__(self, services: Services, run_id: str, *, keep: bool = False) -> None:
        from utils.kafka_cleanup import admin_client

        self.env = services.env
        self.stack = services.stack
        self.run_id = run_id
        self.keep = keep
        self.admin = admin_client(self.env.kafka_settings())
        self._topics: list[str] = []
        self._dbs: list[str] = []

    def database(self, label: str, migrations: Path = schema.MIGRATIONS_DIR) -> PostgresSettings:
        """A fresh database with `migrations` applied (bench.ab gives the base revision its own)."""
        pg = self.stack.create_database(f"bench_{self.run_id}_{label}".lower().replace("-", "_")[:63])
        self._dbs.append(pg.db)
        schema.migrate(pg, migrations)
        return pg

    def drop_database(self, pg: PostgresSettings, *, timeout_s: float = 15.0) -> None:
        """Drop a measurement's database; one still in use after `timeout_s` (a consumer's backend
        outliving its process) is left behind with a warning."""
        if self.keep:
            return
        try:
            self.stack.drop_database(pg.db, timeout_s=timeout_s)
        except StackError as exc:
            log.warning("database %s left behind: %s", pg.db, exc)
            return
        with contextlib.suppress(ValueError):
            self._dbs.remove(pg.db)

    def topic(self, label: str, partitions: int, *, append_time: bool = False) -> str:
        """`append_time`: the broker stamps each record when it appends it (LogAppendTime), so a
        reader can tell the time before the broker had a message from the time after."""
        name = f"bench-{self.run_id}-{label}-{uuid.uuid4().hex[:6]}"
        from utils.kafka_cleanup import new_topic_configs

        # As many copies as the brokers allow (3 on a TXMON_KAFKA_BROKERS=3 cluster), as `make topics`.
        rf = self.env.kafka_replication_factor
        configs = new_topic_configs(rf)
        if append_time:
            configs = {**configs, "message.timestamp.type": "LogAppendTime"}
        self.admin.create_topics(
            {name: {"num_partitions": partitions, "replication_factor": rf, "configs": configs}}
        )
        self._topics.append(name)
        return name

    def delete_topics(self, names: Sequence[str]) -> None:
        from utils.kafka_cleanup import delete_topics

        names = [n for n in names if n in self._topics]
        if names and not self.keep:
            with contextlib.suppress(Exception):
                delete_topics(self.admin, names)
            self._topics = [t for t in self._topics if t not in names]

    def settings(
        self,
        label: str,
        *,
        partitions: int = 6,
        pg: PostgresSettings | None = None,
        accounts: int | None = None,
        append_time: bool = False,
    ) -> Settings:
        """Settings for one measurement: its own topic (`append_time`: see `topic`), DLQ, group
        and (unless given) database."""
        topic = self.topic(label, partitions, append_time=append_time)
        kafka = dataclasses.replace(
            self.env.kafka_settings(),
            topic=topic,
            dlq_topic=self.topic(f"{label}-dlq", 1),
            consumer_group=f"g-{topic}",
            topic_partitions=partitions,
        )
        base = Settings()
        producer = (
            base.producer if accounts is None else dataclasses.replace(base.producer, accounts=accounts)
        )
        return dataclasses.replace(
            base,
            kafka=kafka,
            postgres=pg or self.database(label),
            producer=producer,
            log_level="INFO",
            log_format="text",
        )

    def release(self, settings: Settings) -> None:
        """Drop the measurement's database and topics (unless --keep)."""
        self.drop_database(settings.postgres)
        self.delete_topics([settings.kafka.topic, settings.kafka.dlq_topic])

    def close(self) -> None:
        if not self.keep:
            self.delete_topics(list(self._topics))
            for name in list(self._dbs):
                self.drop_database(dataclasses.replace(self.env.postgres_settings(), db=name))
        self.admin.close()


# ------------------------------------------------------------------------------------ processes


def child_env(settings: Settings) -> dict[str, str]:
    env = {**os.environ, **settings_to_env(settings)}
    env["TXMON_ENV_FILE"] = os.devnull  # a developer's .env must not redirect the benchmark
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Child:
    """A child process (the real consumer entry point, or a baseline script) with its log file."""

    def __init__(self, argv: Sequence[str], settings: Settings, log_path: Path) -> None:
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen(
            list(argv), env=child_env(settings), stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO
        )
        self.pid = self.proc.pid

    @classmethod
    def consumer(
        cls,
        settings: Settings,
        log_path: Path,
        *args: str,
        profile: Path | None = None,
        tree: Path = REPO,
    ) -> Child:
        """`python consumer/transaction_processor.py ARGS` of `tree` (bench.ab: another revision's);
        with `profile`, run under pyinstrument (main thread only, wall time) and write its text
        report there."""
        prefix = [sys.executable]
        if profile is not None:
            prefix += ["-m", "pyinstrument", "-r", "text", "--no-color", "-o", str(profile)]
        script = tree / CONSUMER_SCRIPT.relative_to(REPO)
        return cls([*prefix, str(script), *args], settings, log_path)

    @classmethod
    def naive(cls, settings: Settings, log_path: Path, *args: str) -> Child:
        return cls([sys.executable, str(NAIVE_SCRIPT), *args], settings, log_path)

    @classmethod
    def latency_floor(cls, settings: Settings, log_path: Path, *args: str) -> Child:
        return cls([sys.executable, str(FLOOR_SCRIPT), *args], settings, log_path)

    def wait_for_output(self, text: str, timeout: float) -> bool:
        """True once `text` appears in the child's output; False on timeout or exit."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return True
            if self.proc.poll() is not None:
                return text in self.output()
            time.sleep(0.1)
        return False

    def pause(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """SIGTERM: the consumer finishes its batch, prints its summary and exits."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        """Exit code; a child still running after `timeout` is stopped (then killed) and -1 returned."""
        if self.proc.returncode is not None:
            return self.proc.returncode
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("pid %d still running after %.0fs: stopping it", self.pid, timeout)
            self.stop()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(15)
            return -1
        finally:
            self._log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


class Sampler:
    """Samples RSS and CPU time of some processes every `interval` seconds, on a thread.

    `groups` (label -> root pid: the broker JVM, ZooKeeper, the PostgreSQL postmaster) are
    sampled for CPU only, each as its whole process tree: the root, its live descendants, and
    the reaped ones (the root's `children_*` times), so PostgreSQL's backends, autovacuum
    workers and checkpointer count even when they come and go inside the window. The machine's
    busy CPU (all cores, every process) is sampled as "machine": what the pipeline did not use
    of it went to other work on the box.
    """

    def __init__(
        self, pids: Sequence[int], interval: float = 0.5, *, groups: Mapping[str, int] | None = None
    ) -> None:
        self.interval = interval
        self.samples: dict[int, list[tuple[float, int]]] = {pid: [] for pid in pids}  # (time, rss bytes)
        self.cpu: dict[int, list[tuple[float, float]]] = {pid: [] for pid in pids}  # (time, user+sys s)
        self._procs = {pid: psutil.Process(pid) for pid in pids}
        self._groups: dict[str, psutil.Process] = {}
        for label, pid in (groups or {}).items():
            with contextlib.suppress(psutil.Error):
                self._groups[label] = psutil.Process(pid)
        # label -> (time, cumulative user+sys s of the tree); plus "machine"
        self.group_cpu: dict[str, list[tuple[float, float]]] = {label: [] for label in self._groups}
        self.group_cpu["machine"] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sample_groups(time.time())  # the window's end is often after the last tick

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.time()
            for pid, proc in list(self._procs.items()):
                try:
                    with proc.oneshot():
                        rss = proc.memory_info().rss
                        cpu = proc.cpu_times()
                except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                    del self._procs[pid]
                    continue
                if rss >= 8 * 2**20 or self.samples[pid]:  # skip the instant between fork and exec
                    self.samples[pid].append((now, rss))
                self.cpu[pid].append((now, cpu.user + cpu.system))
            self._sample_groups(now)
            if not self._procs and not self._groups:
                return
            self._stop.wait(self.interval)

    def _sample_groups(self, now: float) -> None:
        for label, root in list(self._groups.items()):
            total = _tree_cpu_s(root)
            if total is None:
                del self._groups[label]
                continue
            self.group_cpu[label].append((now, total))
        busy = psutil.cpu_times()
        self.group_cpu["machine"].append((now, sum(busy) - busy.idle - getattr(busy, "iowait", 0.0)))

    def cpu_total_s(self, pid: int) -> float:
        series = self.cpu.get(pid) or [(0.0, 0.0)]
        return series[-1][1]

    def peak_mb(self) -> float | None:
        values = [r for s in self.samples.values() for _, r in s]
        return round(max(values) / 2**20, 1) if values else None


def _tree_cpu_s(root: psutil.Process) -> float | None:
    """Cumulative user+system CPU seconds of `root` and every descendant, live or reaped (None
    once the root is gone). A descendant reaped between the two reads below is missed for one
    sample at most."""
    try:
        with root.oneshot():
            t = root.cpu_times()
            total = t.user + t.system + t.children_user + t.children_system
            children = root.children(recursive=True)
    except psutil.Error:
        return None
    for child in children:
        with contextlib.suppress(psutil.Error):
            c = child.cpu_times()
            total += c.user + c.system
    return total


def stack_processes(services: Services) -> dict[str, int]:
    """The stack's own server processes, label -> pid (the bench's CPU budget samples them); a
    component configured from outside (`external`) has no process here."""
    out: dict[str, int] = {}
    for name in ("kafka", "zookeeper", "postgres"):
        mode = services.kafka_mode if name != "postgres" else services.postgres_mode
        if mode != "local":
            continue
        if name == "kafka" and services.stack.kafka_brokers > 1:
            for i, member in enumerate(services.stack.kafka_cluster.members):
                if (pid := member.pid()) is not None:
                    out[f"kafka-{i}"] = pid
            continue
        with contextlib.suppress(Exception):
            pid = services.stack.pid(name)
            if pid is not None:
                out[name] = pid
    return out


# ------------------------------------------------------------------------------------ queries


@contextlib.contextmanager
def _cursor(pg: PostgresSettings) -> Iterator[psycopg2.extensions.cursor]:
    conn = psycopg2.connect(pg.dsn(migration=True))
    try:
        with conn.cursor() as cur:
            yield cur
        conn.rollback()
    finally:
        conn.close()


def stored_count(pg: PostgresSettings) -> int:
    with _cursor(pg) as cur:
        cur.execute("SELECT count(*) FROM transactions")
        return int(cur.fetchone()[0])


def stored_stats(pg: PostgresSettings) -> dict[str, Any]:
    """Count, first/last processed_at (epoch s), and per database transaction (xmin) the end time
    and row count: what the rates are computed from."""
    with _cursor(pg) as cur:
        cur.execute(
            "SELECT count(*), extract(epoch FROM min(processed_at))::float8, "
            "extract(epoch FROM max(processed_at))::float8 FROM transactions"
        )
        count, first, last = cur.fetchone()
        cur.execute(
            "SELECT extract(epoch FROM max(processed_at))::float8, count(*) FROM transactions "
            "GROUP BY xmin::text ORDER BY 1"
        )
        groups = [(float(t), int(n)) for t, n in cur.fetchall()]
        cur.execute("SELECT count(*) FROM alerts")
        alerts = int(cur.fetchone()[0])
        cur.execute("SELECT count(*) FROM rejected_transactions")
        rejected = int(cur.fetchone()[0])
    return {
        "count": int(count),
        "first": first,
        "last": last,
        "groups": groups,
        "alerts": alerts,
        "rejected": rejected,
    }


def latencies(pg: PostgresSettings, at: str = "processed_at") -> tuple[list[float], int]:
    """Per-row latency in seconds for unlabelled rows, and how many labelled rows were left out
    (scenario rows are back-dated by design). `at="processed_at"`: processed_at - timestamp, the
    row's stamp taken while the batch's COPY ran (clock_timestamp()), before the rest of the
    batch's statements and its COMMIT. `at="commit"`: the COMMIT of the row's transaction, when
    readers see it (pg_xact_commit_timestamp); an empty list where the server does not track
    commit timestamps (`track_commit_timestamp`, on in the local stack: stack/postgres.py)."""
    with _cursor(pg) as cur:
        if at == "commit":
            cur.execute("SHOW track_commit_timestamp")
            if cur.fetchone()[0] != "on":
                return [], 0
            stamp = "pg_xact_commit_timestamp(xmin)"
        else:
            stamp = "processed_at"
        cur.execute(
            f'SELECT extract(epoch FROM {stamp} - "timestamp")::float8 FROM transactions '
            "WHERE simulated_scenario IS NULL"
        )
        values = [float(r[0]) for r in cur.fetchall()]
        cur.execute("SELECT count(*) FROM transactions WHERE simulated_scenario IS NOT NULL")
        excluded = int(cur.fetchone()[0])
    return values, excluded


def row_times(pg: PostgresSettings) -> list[tuple[int, int, float, float, float | None]]:
    """(partition, offset, timestamp, processed_at, commit or None) in Unix seconds for each
    unlabelled row: the per-message view `latencies` summarises, to join with a same-run probe
    (bench.stats.beside_probe). The commit is None where the server does not track it."""
    with _cursor(pg) as cur:
        cur.execute("SHOW track_commit_timestamp")
        commit = (
            "extract(epoch FROM pg_xact_commit_timestamp(xmin))::float8"
            if cur.fetchone()[0] == "on"
            else "NULL::float8"
        )
        cur.execute(
            'SELECT kafka_partition, kafka_offset, extract(epoch FROM "timestamp")::float8, '
            f"extract(epoch FROM processed_at)::float8, {commit} FROM transactions "
            "WHERE simulated_scenario IS NULL"
        )
        return [
            (int(a), int(b), float(c), float(d), None if e is None else float(e)) for a, b, c, d, e in cur
        ]


def wait_for_rows(
    pg: PostgresSettings,
    expected: int,
    timeout: float,
    *,
    children: Sequence[Child] = (),
    interval: float = 0.5,
) -> int:
    """Poll the row count until `expected`, the timeout, or every child has exited. (A count(*)
    costs the server a little: keep `interval` long while a measurement is running.)"""
    deadline = time.monotonic() + timeout
    count = 0
    while time.monotonic() < deadline:
        count = stored_count(pg)
        if count >= expected:
            return count
        if children and all(c.proc.poll() is not None for c in children):
            return stored_count(pg)
        time.sleep(interval)
    return count


def wait_for_group(
    bootstrap_admin: Any, group: str, members: int, timeout: float, partitions: int | None = None
) -> bool:
    """True once `group` is Stable with `members` members that all hold partitions, and (given
    `partitions`) every partition assigned: under the cooperative protocol a group is Stable
    between its two rounds too, with the moving partitions held by nobody."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            described = bootstrap_admin.describe_groups([group])
        except Exception as exc:  # the coordinator may not exist yet
            log.debug("describe_groups %s: %s", group, exc)
            described = []
        # kafka-python 3: {group_id: {"group_state": ..., "members": [...]}}; older: a list
        groups = described.values() if isinstance(described, dict) else described
        for g in groups:
            state = _field(g, "group_state") or _field(g, "state")
            assigned = [
                m
                for m in (_field(g, "members") or [])
                if _field(_field(m, "member_assignment") or {}, "assigned_partitions")
            ]
            held = sum(
                _partition_count(entry)
                for m in assigned
                for entry in _field(_field(m, "member_assignment") or {}, "assigned_partitions") or ()
            )
            if state == "Stable" and len(assigned) >= members and (partitions is None or held >= partitions):
                return True
        time.sleep(0.25)
    return False


def _partition_count(entry: Any) -> int:
    """Partitions in one (topic, partitions) entry of a member's assignment, in whichever shape
    kafka-python returns it (dict, struct or pair)."""
    parts = _field(entry, "partitions")
    if parts is None and isinstance(entry, list | tuple) and len(entry) == 2:
        parts = entry[1]
    return len(parts or ())


def _field(obj: Any, name: str) -> Any:
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)
