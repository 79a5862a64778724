"""The Compose design's services, run natively: ZooKeeper + Apache Kafka (ZooKeeper mode) + PostgreSQL.

    python -m utils.local_stack up       # start what is missing, wait until ready, print `export` lines
    python -m utils.local_stack env      # print the `export` lines again
    python -m utils.local_stack status
    python -m utils.local_stack down     # stop what this stack started (data is kept; --purge drops it)

Whatever the configured addresses (KAFKA_BOOTSTRAP_SERVERS, POSTGRES_HOST:POSTGRES_PORT, from the
environment or `.env`) already answer is used instead of starting anything; a Kafka that answers
needs no ZooKeeper from us. `--isolated` ignores them and starts everything on this stack's ports.

Kafka's jars come from `stack/kafka/pom.xml` (the one place its version is pinned), resolved once
with Maven into `${TXMON_CACHE_DIR:-~/.cache/txmon}/kafka-<version>/lib`; where that cannot work
(no mvn, Maven Central unreachable) the broker is tansu instead, with a warning (utils/tansu.py;
TXMON_KAFKA_IMPL=auto|apache|tansu). PostgreSQL's binaries
come from the `pgserver` wheel (PostgreSQL 16) or a system install. Every process is started
detached, with a pidfile in the state dir, so `up` returns and a later `down` can stop it.

Tests build their own `LocalStack(tmp_dir, zk_port=..., kafka_port=..., pg_port=...)` and use
`stop_component` / `start_component` to inject broker and database failures mid-stream.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import grp
import hashlib
import json
import logging
import os
import pwd
import re
import secrets
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python utils/local_stack.py`: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reports.zookeeper import zk_command
from utils import tansu
from utils.config import REPO_ROOT, PostgresSettings, load_settings
from utils.errors import StackError, TxmonError

log = logging.getLogger("utils.local_stack" if __name__ == "__main__" else __name__)

COMPONENTS = ("zookeeper", "kafka", "postgres")
HOST = "127.0.0.1"
DEFAULT_PORTS = {"zookeeper": 2181, "kafka": 9092, "postgres": 5432}
PORT_ENV = {
    "zookeeper": "TXMON_STACK_ZK_PORT",
    "kafka": "TXMON_STACK_KAFKA_PORT",
    "postgres": "TXMON_STACK_PG_PORT",
}
ENV_KEYS = (
    "KAFKA_BOOTSTRAP_SERVERS",
    "POSTGRES_HOST",
    "POSTGRES_PORT",
    "POSTGRES_DB",
    "POSTGRES_USER",
    "POSTGRES_PASSWORD",
    "POSTGRES_MIGRATION_USER",
    "POSTGRES_MIGRATION_PASSWORD",
)

KAFKA_POM = REPO_ROOT / "stack" / "kafka" / "pom.xml"
LOG4J_PROPERTIES = REPO_ROOT / "stack" / "kafka" / "log4j.properties"
ZK_HEAP = "-Xmx256m"
KAFKA_HEAP = "-Xmx512m"
BROKER_ID = 0
# Shorter than Kafka's 18 s default: after a broker is SIGKILLed its registration in ZooKeeper
# lives until this session expires, and a restart has to wait for that.
KAFKA_ZK_SESSION_TIMEOUT_MS = 6000

DB_NAME = "transactions"
SUPERUSER = "postgres"
OWNER_ROLE = "txmon_owner"
APP_ROLE = "txmon_app"
# initdb and postgres refuse to run as root; as root we run them as this system user.
PG_SYSTEM_USER = "txmon"
# As root, a data dir under a folder the system user cannot traverse (/root is 0700) moves here.
PG_RELOCATED_BASE = Path("/var/lib/txmon")
# A Unix socket path longer than this (sun_path is 108 bytes) makes postgres refuse to start.
_MAX_SOCKET_PATH = 100


# --------------------------------------------------------------------------------------------
# Pure helpers (unit-tested without services)
# --------------------------------------------------------------------------------------------


def cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """`${TXMON_CACHE_DIR:-~/.cache/txmon}`: jars and the default state dir, outside the repo."""
    environ = os.environ if environ is None else environ
    raw = environ.get("TXMON_CACHE_DIR", "").strip()
    return Path(raw).expanduser() if raw else Path.home() / ".cache" / "txmon"


def default_state_dir(environ: Mapping[str, str] | None = None) -> Path:
    return cache_dir(environ) / "stack"


def parse_port(name: str, raw: str) -> int:
    """A TCP port from text, or a StackError naming the variable to fix."""
    try:
        port = int(raw.strip())
    except ValueError:
        raise StackError(f"{name}={raw!r} is not a port number: set it to an integer 1-65535") from None
    if not 1 <= port <= 65535:
        raise StackError(f"{name}={port} is out of range: set it to an integer 1-65535")
    return port


def ports_from_env(environ: Mapping[str, str] | None = None) -> dict[str, int]:
    """This stack's ports: Compose's defaults, overridden by TXMON_STACK_{ZK,KAFKA,PG}_PORT."""
    environ = os.environ if environ is None else environ
    ports = dict(DEFAULT_PORTS)
    for component, var in PORT_ENV.items():
        raw = environ.get(var, "").strip()
        if raw:
            ports[component] = parse_port(var, raw)
    if len(set(ports.values())) != len(ports):
        raise StackError(
            f"two components share a port {ports}: give each its own via {', '.join(PORT_ENV.values())}"
        )
    return ports


def parse_host_port(addr: str, default_port: int) -> tuple[str, int]:
    """'host:port', 'host', '[::1]:9092' or '[::1]' -> (host, port)."""
    addr = addr.strip()
    if not addr:
        raise StackError("empty address: expected host:port")
    if addr.startswith("["):
        host, sep, rest = addr[1:].partition("]")
        if not sep:
            raise StackError(f"address {addr!r}: unclosed '[' (use [ipv6]:port)")
        if not rest:
            return host, default_port
        if not rest.startswith(":"):
            raise StackError(f"address {addr!r}: expected [ipv6]:port")
        return host, parse_port(f"port in {addr!r}", rest[1:])
    if addr.count(":") > 1:  # a bare IPv6 address
        return addr, default_port
    host, sep, port = addr.partition(":")
    if not host:
        raise StackError(f"address {addr!r} has no host: expected host:port")
    return host, parse_port(f"port in {addr!r}", port) if sep else default_port


def parse_bootstrap(servers: str) -> list[tuple[str, int]]:
    """KAFKA_BOOTSTRAP_SERVERS ('h1:9092,h2:9092', optional PLAINTEXT:// prefixes) -> [(host, port)]."""
    out = []
    for item in servers.split(","):
        item = re.sub(r"^[A-Za-z_]+://", "", item.strip())
        if item:
            out.append(parse_host_port(item, 9092))
    if not out:
        raise StackError(
            f"KAFKA_BOOTSTRAP_SERVERS={servers!r} names no broker: expected host:port[,host:port]"
        )
    return out


def render_properties(props: Mapping[str, object]) -> str:
    """A Java .properties file. Backslashes are escaped: Java reads them as escapes."""
    lines = ["# Written by utils/local_stack.py; rewritten on every start."]
    for key, value in props.items():
        text = str(value).replace("\\", "\\\\").replace("\n", "\\n")
        lines.append(f"{key}={text}")
    return "\n".join(lines) + "\n"


def zookeeper_properties(data_dir: Path, port: int) -> dict[str, object]:
    return {
        "dataDir": data_dir,
        "clientPort": port,
        "clientPortAddress": HOST,
        "tickTime": 2000,
        "maxClientCnxns": 0,
        # The admin server would take port 8080, which Airflow wants.
        "admin.enableServer": "false",
        # `ruok` is the readiness check; `dump` lists ephemeral nodes (a dead broker's registration).
        "4lw.commands.whitelist": "ruok,srvr,mntr,dump",
        # Keep a few snapshots instead of letting the data dir grow forever.
        "autopurge.snapRetainCount": 3,
        "autopurge.purgeInterval": 1,
    }


def kafka_properties(log_dir: Path, port: int, zk_port: int, *, partitions: int = 6) -> dict[str, object]:
    """One broker in ZooKeeper mode, as in the Compose design; single-node replication settings."""
    return {
        "broker.id": BROKER_ID,
        "listeners": f"PLAINTEXT://{HOST}:{port}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{port}",
        "log.dirs": log_dir,
        "zookeeper.connect": f"{HOST}:{zk_port}",
        "zookeeper.session.timeout.ms": KAFKA_ZK_SESSION_TIMEOUT_MS,
        "num.partitions": partitions,
        "offsets.topic.replication.factor": 1,
        "transaction.state.log.replication.factor": 1,
        "transaction.state.log.min.isr": 1,
        # A single member joins at once instead of waiting 3 s for others.
        "group.initial.rebalance.delay.ms": 0,
        "delete.topic.enable": "true",
    }


def export_lines(values: Mapping[str, str]) -> str:
    """`export KEY=value` lines, shell-quoted, for `eval "$(...)"`."""
    out = []
    for key, value in values.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ValueError(f"not a shell variable name: {key!r}")
        out.append(f"export {key}={shlex.quote(str(value))}\n")
    return "".join(out)


def pom_kafka_version(pom_text: str) -> str:
    """The `<kafka.version>` property of stack/kafka/pom.xml."""
    match = re.search(r"<kafka\.version>\s*([^<\s]+)\s*</kafka\.version>", pom_text)
    if not match:
        raise StackError(f"{KAFKA_POM}: no <kafka.version> property; it is the one place the version is set")
    return match.group(1)


def pom_digest(pom_bytes: bytes) -> str:
    return hashlib.sha256(pom_bytes).hexdigest()


def tail_text(path: Path, *, lines: int = 30, start: int = 0) -> str:
    """The last lines of a log (from byte `start`, so only this run's lines), for error messages."""
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(start, size - 16384))
            data = fh.read()
    except OSError:
        return f"(no log at {path})"
    text = data.decode("utf-8", "replace").rstrip("\n")
    if not text:
        return f"(log {path} is empty)"
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


# --------------------------------------------------------------------------------------------
# Environment the stack hands out
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StackEnv:
    """The addresses and credentials the pipeline should use (what `env` prints)."""

    kafka_bootstrap_servers: str
    postgres_host: str
    postgres_port: int
    postgres_db: str
    postgres_user: str
    postgres_password: str = field(repr=False)
    postgres_migration_user: str = ""
    postgres_migration_password: str = field(default="", repr=False)

    def as_environ(self) -> dict[str, str]:
        values = (
            self.kafka_bootstrap_servers,
            self.postgres_host,
            str(self.postgres_port),
            self.postgres_db,
            self.postgres_user,
            self.postgres_password,
            self.postgres_migration_user,
            self.postgres_migration_password,
        )
        return dict(zip(ENV_KEYS, values, strict=True))

    def postgres_settings(self) -> PostgresSettings:
        return PostgresSettings(
            host=self.postgres_host,
            port=self.postgres_port,
            db=self.postgres_db,
            user=self.postgres_user,
            password=self.postgres_password,
            migration_user=self.postgres_migration_user,
            migration_password=self.postgres_migration_password,
        )


@dataclass(frozen=True, slots=True)
class ComponentStatus:
    name: str
    mode: str  # "local" (this stack runs it), "external" (configured address answered), "unused"
    up: bool
    address: str
    pid: int | None = None
    log: Path | None = None


# --------------------------------------------------------------------------------------------
# Small I/O helpers
# --------------------------------------------------------------------------------------------


def tcp_answers(host: str, port: int, timeout_s: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def topics_in_log_dir(log_dir: Path) -> set[str]:
    """Topics a broker holds on disk: its log dir has one `<topic>-<partition>` folder per partition
    (deleted ones end in `-delete`, moving ones in `-future`/`-stray`: not matched)."""
    try:
        names = [p.name for p in log_dir.iterdir() if p.is_dir()]
    except OSError:
        return set()
    return {m.group(1) for n in names if (m := re.fullmatch(r"(.+)-(\d+)", n))}


def kafka_answers(bootstrap: str, timeout_s: float = 3.0, *, expect_topics: Iterable[str] = ()) -> bool:
    """True when a Kafka broker answers a metadata request and the cluster has a controller.

    `expect_topics`: also require these topics in the metadata with a leader for every partition.
    A restarted broker answers before the controller has told it about its old topics; a client
    that asks in that window is told the topic does not exist.
    """
    expected = set(expect_topics)
    try:
        addrs = parse_bootstrap(bootstrap)
    except StackError:
        return False
    # A cheap TCP probe first: kafka-python logs a warning for every refused connection.
    if not any(tcp_answers(h, p, min(timeout_s, 1.0)) for h, p in addrs):
        return False
    from kafka import KafkaAdminClient  # deferred: `status`/`down` should not pay for the import

    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            bootstrap_timeout_ms=int(timeout_s * 1000),
            request_timeout_ms=int(max(timeout_s, 1.0) * 1000),
            client_id="txmon-local-stack-probe",
        )
    except Exception as exc:  # any failure means "not (yet) a usable broker"
        log.debug("kafka probe %s: %s", bootstrap, exc)
        return False
    try:
        cluster = admin.describe_cluster()
        if not cluster.get("brokers") or cluster.get("controller_id", -1) < 0:
            return False
        if not expected:
            return True
        served = {
            t["name"]
            for t in admin.describe_topics(sorted(expected))
            if t.get("error_code", 0) == 0
            and t.get("partitions")
            and all(p.get("leader_id", -1) >= 0 for p in t["partitions"])
        }
        return expected <= served
    except Exception as exc:
        log.debug("kafka probe %s: %s", bootstrap, exc)
        return False
    finally:
        admin.close()


def _find_java(environ: Mapping[str, str]) -> str:
    java_home = environ.get("JAVA_HOME", "")
    candidate = Path(java_home) / "bin" / "java" if java_home else None
    if candidate and candidate.exists():
        return str(candidate)
    found = shutil.which("java")
    if not found:
        raise StackError(
            "java not found: Kafka and ZooKeeper need Java 11+ (17 tested). "
            "Install it (apt-get install openjdk-17-jre-headless) or set JAVA_HOME."
        )
    return found


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive flock, held across processes (two `make stack-up`, parallel test sessions)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        os.fchmod(fh.fileno(), mode)  # the umask must not widen a secret's mode
        fh.write(text)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# Kafka's jars: resolved once per pom into the cache
# --------------------------------------------------------------------------------------------


class MavenUnavailable(StackError):
    """Kafka's jars cannot be had from Maven Central here (no mvn, no network): the case the
    tansu fallback broker exists for."""


_NETWORK_ERRORS = re.compile(
    r"Could not transfer|Could not resolve|UnknownHost|Connection refused|Network is unreachable|"
    r"Connect to .* failed|timed out|Temporary failure in name resolution|offline mode|"
    # The first download is the dependency plugin itself; when it fails Maven says this instead.
    r"No plugin found for prefix|Plugin .* could not be resolved",
    re.IGNORECASE,
)


def _lib_ready(lib: Path, stamp: Path, digest: str) -> bool:
    try:
        return stamp.read_text().strip() == digest and any(lib.glob("kafka_2.*.jar"))
    except OSError:
        return False


def kafka_lib_dir(
    pom: Path = KAFKA_POM, *, environ: Mapping[str, str] | None = None, maven_timeout_s: float = 900.0
) -> Path:
    """The folder of Kafka's runtime jars, resolving it with Maven the first time.

    Keyed by the pom's hash: editing the pinned version re-resolves. Resolution runs under a
    file lock so two processes never download into the same folder at once.
    `TXMON_KAFKA_LIB_DIR` points at a ready folder instead (e.g. a Kafka 3.9 distribution's libs/).
    """
    environ = os.environ if environ is None else environ
    override = environ.get("TXMON_KAFKA_LIB_DIR", "").strip()
    if override:
        lib = Path(override).expanduser()
        if not any(lib.glob("kafka_2.*.jar")) or not any(lib.glob("zookeeper-*.jar")):
            raise StackError(
                f"TXMON_KAFKA_LIB_DIR={lib} holds no kafka_2.*.jar and zookeeper-*.jar: point it at "
                "a Kafka 3.9 distribution's libs/ folder, or unset it to resolve the jars with Maven"
            )
        return lib
    pom_bytes = pom.read_bytes()
    version = pom_kafka_version(pom_bytes.decode())
    digest = pom_digest(pom_bytes)
    base = cache_dir(environ) / f"kafka-{version}"
    lib, stamp = base / "lib", base / "pom.sha256"
    if _lib_ready(lib, stamp, digest):
        return lib
    with _file_lock(base.parent / f"kafka-{version}.lock"):
        if _lib_ready(lib, stamp, digest):  # another process resolved it while we waited
            return lib
        _resolve_jars(pom, base, lib, stamp, digest, version, maven_timeout_s)
    return lib


def _resolve_jars(
    pom: Path, base: Path, lib: Path, stamp: Path, digest: str, version: str, timeout_s: float
) -> None:
    mvn = shutil.which("mvn")
    if not mvn:
        raise MavenUnavailable(
            "mvn not found: the local stack resolves Apache Kafka's jars from Maven Central once. "
            "Install Maven (apt-get install maven), or set TXMON_KAFKA_LIB_DIR to a Kafka 3.9 libs/ folder."
        )
    _find_java(os.environ)  # mvn needs it too; name the fix before Maven fails obscurely
    base.mkdir(parents=True, exist_ok=True)
    tmp = base / f"lib.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    log.info("resolving Apache Kafka %s jars with Maven into %s (once; ~50 MB)", version, lib)
    started = time.monotonic()
    argv = [
        mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
        f"-DoutputDirectory={tmp}", "-DincludeScope=runtime",
    ]  # fmt: skip
    try:
        result = subprocess.run(
            argv, cwd=base, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        shutil.rmtree(tmp, ignore_errors=True)
        raise MavenUnavailable(
            f"mvn did not finish in {timeout_s:.0f} s resolving Kafka {version}: is Maven Central reachable "
            "(proxy/mirror in ~/.m2/settings.xml)? Or set TXMON_KAFKA_LIB_DIR to a Kafka 3.9 libs/ folder."
        ) from None
    output = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr).strip()  # Maven's colours
    if result.returncode != 0 or not any(tmp.glob("kafka_2.*.jar")):
        shutil.rmtree(tmp, ignore_errors=True)
        tail = "\n".join("    " + line for line in output.splitlines()[-20:])
        if _NETWORK_ERRORS.search(output):
            raise MavenUnavailable(
                f"Maven could not download Apache Kafka {version} from Maven Central. Fix the network "
                "or the proxy/mirror in ~/.m2/settings.xml, or set TXMON_KAFKA_LIB_DIR to a Kafka 3.9 "
                f"distribution's libs/ folder. mvn said:\n{tail}"
            )
        raise StackError(f"mvn failed resolving {pom} (exit {result.returncode}):\n{tail}")
    if lib.exists():
        shutil.rmtree(lib)
    tmp.rename(lib)
    _write_atomic(stamp, digest + "\n")
    jars = list(lib.glob("*.jar"))
    log.info("resolved %d jars in %.1f s", len(jars), time.monotonic() - started)


# --------------------------------------------------------------------------------------------
# PostgreSQL binaries and the user that runs them
# --------------------------------------------------------------------------------------------


def _reachable_by(path: Path, user: pwd.struct_passwd) -> bool:
    """Can `user` traverse every folder down to `path` (checked from the mode bits)?"""
    gids = {user.pw_gid} | {g.gr_gid for g in grp.getgrall() if user.pw_name in g.gr_mem}
    for p in [path, *path.parents]:
        try:
            st = p.stat()
        except OSError:
            return False
        if not stat.S_ISDIR(st.st_mode):
            continue
        if st.st_uid == user.pw_uid:
            need = stat.S_IXUSR
        elif st.st_gid in gids:
            need = stat.S_IXGRP
        else:
            need = stat.S_IXOTH
        if not st.st_mode & need:
            return False
    return True


def _pg_bin_candidates(environ: Mapping[str, str]) -> list[Path]:
    out: list[Path] = []
    override = environ.get("TXMON_PG_BIN", "").strip()
    if override:
        out.append(Path(override).expanduser())
    import importlib.util

    spec = importlib.util.find_spec("pgserver")  # located, not imported: its import has side effects
    if spec and spec.origin:
        out.append(Path(spec.origin).parent / "pginstall" / "bin")

    def major(p: Path) -> int:
        return int(p.parent.name) if p.parent.name.isdigit() else 0

    system = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=major, reverse=True)
    out.extend(system)
    return [p for p in out if (p / "pg_ctl").exists() and (p / "initdb").exists()]


def _pg_major(bin_dir: Path) -> str:
    out = subprocess.run([str(bin_dir / "postgres"), "--version"], capture_output=True, text=True).stdout
    match = re.search(r"(\d+)(?:\.\d+)?", out)
    return match.group(1) if match else ""


def _ensure_system_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    log.info("creating system user %r to run PostgreSQL (initdb refuses root)", name)
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    result = subprocess.run(
        [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        capture_output=True,
        text=True,
    )
    if result.returncode not in (0, 9):  # 9: created meanwhile by someone else
        raise StackError(f"useradd {name} failed: {result.stderr.strip()}; create the user by hand")
    return pwd.getpwnam(name)


# --------------------------------------------------------------------------------------------
# The stack
# --------------------------------------------------------------------------------------------


class LocalStack:
    """ZooKeeper + Kafka + PostgreSQL under one state dir, on the given ports.

    Data (ZooKeeper's, the broker's log dir, PostgreSQL's cluster) and generated passwords stay in
    `state_dir` across `down`/`up` and component restarts; only `destroy()` removes them.
    """

    def __init__(
        self,
        state_dir: Path | str | None = None,
        *,
        zk_port: int = DEFAULT_PORTS["zookeeper"],
        kafka_port: int = DEFAULT_PORTS["kafka"],
        pg_port: int = DEFAULT_PORTS["postgres"],
        existing_kafka: str | None = None,
        existing_postgres: PostgresSettings | None = None,
        start_timeout_s: float = 120.0,
        stop_timeout_s: float = 60.0,
        kafka_partitions: int = 6,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.environ = dict(os.environ if environ is None else environ)
        self.state_dir = Path(state_dir or default_state_dir(self.environ)).expanduser().absolute()
        self.ports = {"zookeeper": zk_port, "kafka": kafka_port, "postgres": pg_port}
        if len(set(self.ports.values())) != 3:
            raise StackError(f"zookeeper, kafka and postgres need three different ports, got {self.ports}")
        # Configured services to use instead of starting ours, if they answer at `up()`.
        self.existing_kafka = existing_kafka
        self.existing_postgres = existing_postgres
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.kafka_partitions = kafka_partitions
        self._procs: dict[str, subprocess.Popen[bytes]] = {}  # children of this process, to reap
        self._lock_depth = 0
        self._pg_bin: Path | None = None

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        state_dir: Path | str | None = None,
        isolated: bool = False,
    ) -> LocalStack:
        """The CLI's stack: ports from TXMON_STACK_*_PORT, configured services from settings/.env."""
        # The real environment also reads `.env`; an explicit mapping (tests) is taken as it is.
        settings = load_settings() if environ is None else load_settings(environ)
        environ = dict(os.environ if environ is None else environ)
        ports = ports_from_env(environ)
        return cls(
            state_dir or default_state_dir(environ),
            zk_port=ports["zookeeper"],
            kafka_port=ports["kafka"],
            pg_port=ports["postgres"],
            existing_kafka=None if isolated else settings.kafka.bootstrap_servers,
            existing_postgres=None if isolated else settings.postgres,
            kafka_partitions=settings.kafka.topic_partitions,
            environ=environ,
        )

    # ---- layout ------------------------------------------------------------------------------

    @property
    def kafka_bootstrap(self) -> str:
        return f"{HOST}:{self.ports['kafka']}"

    def _run_dir(self) -> Path:
        return self.state_dir / "run"

    def _pidfile(self, name: str) -> Path:
        return self._run_dir() / f"{name}.pid"

    def _config_path(self, name: str) -> Path:
        return self.state_dir / name / ("zk.properties" if name == "zookeeper" else "server.properties")

    def log_path(self, name: str) -> Path:
        self._check_name(name)
        if name == "postgres":
            return self.pg_dir / "postgres.log"  # written by pg_ctl as the postgres user
        return self.state_dir / "logs" / f"{name}.log"

    @property
    def _as_root(self) -> bool:
        return os.geteuid() == 0

    @property
    def pg_dir(self) -> Path:
        """PostgreSQL's folder: data, socket, log.

        As root the server runs as PG_SYSTEM_USER, which cannot reach a state dir under /root
        (mode 0700) or pytest's tmp; then the folder lives under PG_RELOCATED_BASE, keyed by the
        state dir, with a symlink from the state dir so it can be found.
        """
        local = self.state_dir / "postgres"
        if not self._as_root:
            return local
        key = hashlib.sha256(str(self.state_dir).encode()).hexdigest()[:12]
        relocated = PG_RELOCATED_BASE / f"stack-{key}"
        # Sticky once made: the symlink says "relocated", a real folder says "here".
        if local.is_symlink():
            return relocated
        if local.is_dir():
            return local
        try:
            user = pwd.getpwnam(PG_SYSTEM_USER)
        except KeyError:
            return relocated
        existing = next((p for p in [self.state_dir, *self.state_dir.parents] if p.exists()), Path("/"))
        return local if _reachable_by(existing, user) else relocated

    def _secrets_path(self) -> Path:
        return self.state_dir / "secrets.json"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One process at a time changes this state dir; re-entrant within this object."""
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with _file_lock(self.state_dir / ".lock"):
            self._lock_depth = 1
            try:
                yield
            finally:
                self._lock_depth = 0

    @staticmethod
    def _check_name(name: str) -> None:
        if name not in COMPONENTS:
            raise StackError(f"unknown component {name!r}: one of {', '.join(COMPONENTS)}")

    # ---- recorded decisions (which components are ours) ----------------------------------------

    def _read_state(self) -> dict[str, Any]:
        try:
            return dict(json.loads((self.state_dir / "stack.json").read_text()))
        except (OSError, ValueError):
            return {}

    def _write_state(self, state: Mapping[str, Any]) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        _write_atomic(self.state_dir / "stack.json", json.dumps(state, indent=2, sort_keys=True) + "\n")

    def is_local(self, name: str) -> bool:
        """Does this stack run `name` itself (as opposed to using a configured service, or not at all)?"""
        self._check_name(name)
        return self._mode(name) == "local"

    def _mode(self, name: str) -> str:
        """'local', 'external' or 'unused', as decided by the last `up()` (local if none yet)."""
        return str(self._read_state().get(name, "local"))

    # ---- processes -------------------------------------------------------------------------------

    def pid(self, name: str) -> int | None:
        """PID of this stack's running process for `name`, or None (stale pidfiles count as None)."""
        self._check_name(name)
        if name == "postgres":
            return self._postmaster_pid()
        try:
            pid = int(self._pidfile(name).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        # Something of ours in the command line guards against a reused PID: the config path of
        # a JVM, the listener of tansu (which has no config file).
        marker = str(self._config_path(name))
        if name == "kafka" and self.kafka_impl() == "tansu":
            marker = f"tcp://{HOST}:{self.ports['kafka']}"
        return pid if _pid_alive(pid, marker) else None

    def _postmaster_pid(self) -> int | None:
        try:
            pid = int((self.pg_dir / "data" / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if _pid_alive(pid, "postgres") else None

    def is_up(self, name: str) -> bool:
        """Is `name` running and answering? External components: does their address answer?"""
        self._check_name(name)
        mode = self._mode(name)
        if mode == "external":
            return self._external_answers(name, quick=True)
        if mode == "unused":
            return False
        if self.pid(name) is None:
            return False
        if name == "zookeeper":
            return zk_command(self.ports["zookeeper"], "ruok") == "imok"
        return tcp_answers(HOST, self.ports[name])

    def _external_answers(self, name: str, *, quick: bool = False) -> bool:
        if name == "kafka" and self.existing_kafka:
            if quick:
                return any(tcp_answers(h, p) for h, p in parse_bootstrap(self.existing_kafka))
            return kafka_answers(self.existing_kafka)
        if name == "postgres" and self.existing_postgres:
            return tcp_answers(self.existing_postgres.host, self.existing_postgres.port)
        return False

    def _spawn(self, name: str, argv: list[str]) -> tuple[subprocess.Popen[bytes], int]:
        """Start a detached process logging to logs/<name>.log; returns it and the log offset."""
        logfile = self.log_path(name)
        logfile.parent.mkdir(parents=True, exist_ok=True)
        self._run_dir().mkdir(parents=True, exist_ok=True)
        with open(logfile, "ab") as out:
            offset = out.tell()
            out.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} local_stack starting {name}\n".encode())
            out.flush()
            # A new session: Ctrl-C in the shell that ran `up` must not reach the services.
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.state_dir / name,
                start_new_session=True,
                close_fds=True,
            )
        self._procs[name] = proc
        _write_atomic(self._pidfile(name), f"{proc.pid}\n")
        return proc, offset

    def _wait_ready(
        self, name: str, ready: Callable[[], bool], alive: Callable[[], bool], log_offset: int
    ) -> None:
        started = time.monotonic()
        deadline = started + self.start_timeout_s
        while True:
            if ready():
                log.info(
                    "%s ready on %s:%d (%.1f s)", name, HOST, self.ports[name], time.monotonic() - started
                )
                return
            if not alive():
                raise StackError(
                    f"{name} exited during start-up; last lines of {self.log_path(name)}:\n"
                    f"{tail_text(self.log_path(name), start=log_offset)}{self._hint(name, log_offset)}"
                )
            if time.monotonic() > deadline:
                raise StackError(
                    f"{name} not ready on {HOST}:{self.ports[name]} after {self.start_timeout_s:.0f} s; "
                    f"last lines of {self.log_path(name)}:\n"
                    f"{tail_text(self.log_path(name), start=log_offset)}"
                )
            time.sleep(0.2)

    def _hint(self, name: str, log_offset: int) -> str:
        text = tail_text(self.log_path(name), start=log_offset, lines=400)
        if "InconsistentClusterIdException" in text:
            return (
                f"\nfix: the broker's data ({self.state_dir / 'kafka' / 'data'}) belongs to another "
                "ZooKeeper cluster: remove that folder (its topics are lost) or restore the ZooKeeper data"
            )
        if "Address already in use" in text or "BindException" in text:
            return f"\nfix: port {self.ports[name]} is taken: set {PORT_ENV[name]} to a free port"
        return ""

    def _check_port_free(self, name: str) -> None:
        port = self.ports[name]
        if tcp_answers(HOST, port, 0.5):
            raise StackError(
                f"port {port} ({name}) is already in use by a process this stack did not start: "
                f"stop it or set {PORT_ENV[name]} to a free port"
            )

    # ---- components -------------------------------------------------------------------------------

    def start_component(self, name: str) -> None:
        """Start one of this stack's components (and what it needs) and wait until it answers."""
        self._check_name(name)
        with self._locked():
            if name == "zookeeper":
                self._start_zookeeper()
            elif name == "kafka":
                self._start_broker()
            else:
                self._start_postgres()

    def stop_component(self, name: str, *, kill: bool = False) -> None:
        """Stop one component: graceful by default; `kill=True` simulates a crash (SIGKILL;
        PostgreSQL: immediate shutdown, recovered on the next start). Data stays on disk."""
        self._check_name(name)
        with self._locked():
            if name == "postgres":
                self._stop_postgres(kill=kill)
            else:
                self._stop_java(name, kill=kill)

    def _java_argv(self, heap: str, main_class: str, config: Path, lib: Path) -> list[str]:
        return [
            _find_java(self.environ),
            heap,
            "-Djava.awt.headless=true",
            "-XX:+ExitOnOutOfMemoryError",
            f"-Dlog4j.configuration=file:{LOG4J_PROPERTIES}",
            "-cp",
            f"{lib}/*",
            main_class,
            str(config),
        ]

    def _start_zookeeper(self) -> None:
        if self.pid("zookeeper") is not None:
            if zk_command(self.ports["zookeeper"], "ruok") == "imok":
                return
            # Ours but not answering (yet): give it the normal start-up time.
            self._wait_ready("zookeeper", self._zk_ready, lambda: self.pid("zookeeper") is not None, 0)
            return
        self._check_port_free("zookeeper")
        lib = kafka_lib_dir(environ=self.environ)
        home = self.state_dir / "zookeeper"
        (home / "data").mkdir(parents=True, exist_ok=True)
        config = self._config_path("zookeeper")
        config.write_text(render_properties(zookeeper_properties(home / "data", self.ports["zookeeper"])))
        log.info("starting zookeeper on %s:%d", HOST, self.ports["zookeeper"])
        proc, offset = self._spawn(
            "zookeeper",
            self._java_argv(ZK_HEAP, "org.apache.zookeeper.server.quorum.QuorumPeerMain", config, lib),
        )
        self._wait_ready("zookeeper", self._zk_ready, lambda: proc.poll() is None, offset)

    def _zk_ready(self) -> bool:
        return zk_command(self.ports["zookeeper"], "ruok") == "imok"

    def _start_kafka(self) -> None:
        if self.pid("kafka") is not None:
            self._wait_ready("kafka", self._kafka_ready, lambda: self.pid("kafka") is not None, 0)
            return
        self._check_port_free("kafka")
        self._wait_broker_deregistered()
        lib = kafka_lib_dir(environ=self.environ)
        home = self.state_dir / "kafka"
        (home / "data").mkdir(parents=True, exist_ok=True)
        config = self._config_path("kafka")
        props = kafka_properties(
            home / "data", self.ports["kafka"], self.ports["zookeeper"], partitions=self.kafka_partitions
        )
        config.write_text(render_properties(props))
        log.info("starting kafka on %s (ZooKeeper mode, broker %d)", self.kafka_bootstrap, BROKER_ID)
        proc, offset = self._spawn("kafka", self._java_argv(KAFKA_HEAP, "kafka.Kafka", config, lib))
        self._wait_ready("kafka", self._kafka_ready, lambda: proc.poll() is None, offset)

    def _kafka_ready(self) -> bool:
        expect = topics_in_log_dir(self.state_dir / "kafka" / "data")
        return kafka_answers(self.kafka_bootstrap, timeout_s=2.0, expect_topics=expect)

    def _wait_broker_deregistered(self) -> None:
        """After a SIGKILL the dead broker's ZooKeeper registration lives until its session expires;
        a broker started before that refuses to register (NodeExists). Wait it out."""
        deadline = time.monotonic() + KAFKA_ZK_SESSION_TIMEOUT_MS / 1000 + 10
        waited = False
        while f"/brokers/ids/{BROKER_ID}" in zk_command(self.ports["zookeeper"], "dump"):
            if time.monotonic() > deadline:
                raise StackError(
                    f"broker {BROKER_ID} is still registered in ZooKeeper on port {self.ports['zookeeper']}: "
                    "is another broker using it? Stop that broker or give this stack its own ZooKeeper port"
                )
            if not waited:
                log.info("waiting for the previous broker's ZooKeeper session to expire")
                waited = True
            time.sleep(0.5)

    def _stop_java(self, name: str, *, kill: bool) -> None:
        pid = self.pid(name)
        if pid is None:
            self._pidfile(name).unlink(missing_ok=True)  # stale or missing: nothing to stop
            return
        log.info("%s %s (pid %d)", "killing" if kill else "stopping", name, pid)
        started = time.monotonic()
        _signal(pid, signal.SIGKILL if kill else signal.SIGTERM)
        if not self._wait_exit(name, pid, self.stop_timeout_s):
            log.warning("%s (pid %d) ignored SIGTERM for %.0f s: SIGKILL", name, pid, self.stop_timeout_s)
            _signal(pid, signal.SIGKILL)
            if not self._wait_exit(name, pid, 10):
                raise StackError(f"{name} (pid {pid}) survived SIGKILL: check `ps -p {pid}`")
        self._pidfile(name).unlink(missing_ok=True)
        # The listener can outlive the PID by a moment; a restart must find the port free.
        deadline = time.monotonic() + 10
        while tcp_answers(HOST, self.ports[name], 0.2) and time.monotonic() < deadline:
            time.sleep(0.1)
        log.info("%s stopped (%.1f s)", name, time.monotonic() - started)

    def _wait_exit(self, name: str, pid: int, timeout_s: float) -> bool:
        proc = self._procs.get(name)
        if proc is not None and proc.pid == pid:
            try:
                proc.wait(timeout_s)  # reaps our child, so no zombie is left behind
                self._procs.pop(name, None)
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + timeout_s
        while _pid_alive(pid, None):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    # ---- postgres --------------------------------------------------------------------------------

    def _pg_user(self) -> pwd.struct_passwd | None:
        return _ensure_system_user(PG_SYSTEM_USER) if self._as_root else None

    def _as_pg_user(self, argv: list[str]) -> list[str]:
        if not self._as_root:
            return argv
        runuser = shutil.which("runuser") or "/usr/sbin/runuser"
        return [runuser, "-u", PG_SYSTEM_USER, "--", *argv]

    def _pg_bin_dir(self) -> Path:
        if self._pg_bin is not None:
            return self._pg_bin
        user = self._pg_user()
        candidates = _pg_bin_candidates(self.environ)
        if user is not None:  # the system user must be able to reach the binaries
            candidates = [c for c in candidates if _reachable_by(c, user)]
        if not candidates:
            raise StackError(
                "no usable PostgreSQL binaries: install the pgserver wheel (make venv), "
                "or apt-get install postgresql, or set TXMON_PG_BIN to a folder holding initdb and pg_ctl"
                + (f" that user {PG_SYSTEM_USER!r} can read" if user else "")
            )
        # An existing cluster needs the major version that created it.
        try:
            wanted = (self.pg_dir / "data" / "PG_VERSION").read_text().strip()
        except OSError:
            wanted = ""
        if wanted:
            matching = [c for c in candidates if _pg_major(c) == wanted]
            if not matching:
                raise StackError(
                    f"the cluster in {self.pg_dir / 'data'} is PostgreSQL {wanted}, and no "
                    f"PostgreSQL {wanted} binaries were found: install them, set TXMON_PG_BIN, "
                    "or remove that folder (data lost)"
                )
            candidates = matching
        self._pg_bin = candidates[0]
        return self._pg_bin

    def _prepare_pg_dir(self) -> Path:
        pg_dir = self.pg_dir
        user = self._pg_user()
        pg_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if user is not None:
            os.chown(pg_dir, user.pw_uid, user.pw_gid)
            local = self.state_dir / "postgres"
            if pg_dir != local and not local.is_symlink():
                local.symlink_to(pg_dir, target_is_directory=True)  # so `ls state_dir` finds it
        return pg_dir

    def _secrets(self) -> dict[str, str]:
        """Generated passwords (postgres, owner, app): created once, 0600, reused across restarts."""
        path = self._secrets_path()
        try:
            data = json.loads(path.read_text())
            if all(isinstance(data.get(k), str) and data[k] for k in (SUPERUSER, OWNER_ROLE, APP_ROLE)):
                return {k: data[k] for k in (SUPERUSER, OWNER_ROLE, APP_ROLE)}
        except (OSError, ValueError):
            pass
        if (self.pg_dir / "data" / "PG_VERSION").exists():
            raise StackError(
                f"{path} is missing or broken but the cluster in {self.pg_dir / 'data'} exists: "
                f"restore the file, or remove {self.pg_dir} to start PostgreSQL over (its data is lost)"
            )
        values = {k: secrets.token_urlsafe(24) for k in (SUPERUSER, OWNER_ROLE, APP_ROLE)}
        self.state_dir.mkdir(parents=True, exist_ok=True)
        _write_atomic(path, json.dumps(values, indent=2) + "\n", mode=0o600)
        return values

    def _pg_ctl(self, *args: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
        argv = self._as_pg_user([str(self._pg_bin_dir() / "pg_ctl"), "-D", str(self.pg_dir / "data"), *args])
        return subprocess.run(
            argv,
            cwd=self.pg_dir,  # the postgres user must be able to read its working directory
            capture_output=True,
            text=True,
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
        )

    def _initdb(self, pg_dir: Path, superuser_password: str) -> None:
        data = pg_dir / "data"
        if data.exists():
            shutil.rmtree(data)  # an initdb that died half-way leaves a folder it would refuse
        user = self._pg_user()
        pwfile = pg_dir / ".pwfile"
        _write_atomic(pwfile, superuser_password + "\n", mode=0o600)
        if user is not None:
            os.chown(pwfile, user.pw_uid, user.pw_gid)
        log.info("initdb %s (PostgreSQL from %s)", data, self._pg_bin_dir())
        try:
            argv = self._as_pg_user([
                str(self._pg_bin_dir() / "initdb"), "-D", str(data), "-U", SUPERUSER,
                # Passwords over TCP and on the socket: the superuser's is generated and kept 0600.
                "--auth=scram-sha-256", f"--pwfile={pwfile}", "--encoding=UTF8", "--no-locale",
            ])  # fmt: skip
            result = subprocess.run(argv, cwd=pg_dir, capture_output=True, text=True, timeout=300)
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise StackError(
                f"initdb failed (exit {result.returncode}):\n{(result.stdout + result.stderr)[-3000:]}"
            )

    def _start_postgres(self) -> None:
        if self._postmaster_pid() is not None and tcp_answers(HOST, self.ports["postgres"]):
            self._provision_postgres()
            return
        if self._postmaster_pid() is None:
            self._check_port_free("postgres")  # before a slow initdb
        pg_dir = self._prepare_pg_dir()
        passwords = self._secrets()
        if not (pg_dir / "data" / "PG_VERSION").exists():
            self._initdb(pg_dir, passwords[SUPERUSER])
        if self._postmaster_pid() is None:  # a postmaster that is up but not yet listening: just wait
            self._check_port_free("postgres")
            sock_dir = pg_dir / "run"
            sock_dir.mkdir(exist_ok=True, mode=0o700)
            user = self._pg_user()
            if user is not None:
                os.chown(sock_dir, user.pw_uid, user.pw_gid)
            if len(str(sock_dir / ".s.PGSQL.65535")) <= _MAX_SOCKET_PATH:
                sock_opt = f"-k {shlex.quote(str(sock_dir))}"
            else:
                sock_opt = "-c unix_socket_directories=''"  # TCP only; the pipeline never uses the socket
            # pg_ctl hands -o to a shell: quote paths.
            opts = f"-p {self.ports['postgres']} {sock_opt} -c listen_addresses={HOST}"
            log_file = self.log_path("postgres")
            offset = log_file.stat().st_size if log_file.exists() else 0
            log.info("starting postgres on %s:%d (%s)", HOST, self.ports["postgres"], pg_dir / "data")
            started = time.monotonic()
            timeout = int(self.start_timeout_s)
            try:
                result = self._pg_ctl(
                    "-o", opts, "-l", str(log_file), "-w", "-t", str(timeout), "start", timeout_s=timeout + 10
                )
            except subprocess.TimeoutExpired:
                result = None
            if result is None or result.returncode != 0:
                said = (result.stdout + result.stderr).strip() if result else "pg_ctl timed out"
                raise StackError(
                    f"postgres did not start on {HOST}:{self.ports['postgres']}: {said}\n"
                    f"last lines of {log_file}:\n{tail_text(log_file, start=offset)}"
                    f"{self._hint('postgres', offset)}"
                )
            log.info(
                "postgres ready on %s:%d (%.1f s)", HOST, self.ports["postgres"], time.monotonic() - started
            )
        self._provision_postgres()

    def _provision_postgres(self) -> None:
        """Roles and database, idempotently; passwords re-set so they always match secrets.json."""
        import psycopg2
        from psycopg2 import sql

        passwords = self._secrets()
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            try:
                conn = psycopg2.connect(
                    host=HOST,
                    port=self.ports["postgres"],
                    dbname="postgres",
                    user=SUPERUSER,
                    password=passwords[SUPERUSER],
                    connect_timeout=5,
                    application_name="txmon-local-stack",
                )
                break
            except psycopg2.OperationalError as exc:
                if "password authentication failed" in str(exc):
                    raise StackError(
                        f"the postgres password in {self._secrets_path()} does not match the cluster in "
                        f"{self.pg_dir / 'data'}: restore the file or remove that folder (data lost)"
                    ) from None
                if time.monotonic() > deadline:
                    raise StackError(
                        f"postgres on {HOST}:{self.ports['postgres']} refuses connections: {exc}"
                    ) from None
                time.sleep(0.3)  # "the database system is starting up" after a crash restart
        conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
        try:
            with conn.cursor() as cur:
                roles = (
                    (OWNER_ROLE, "LOGIN CREATEDB NOSUPERUSER NOCREATEROLE"),
                    (APP_ROLE, "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE"),
                )
                for role, attributes in roles:
                    cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
                    verb = "ALTER" if cur.fetchone() else "CREATE"
                    cur.execute(
                        sql.SQL("{} ROLE {} WITH {} PASSWORD %s").format(
                            sql.SQL(verb), sql.Identifier(role), sql.SQL(attributes)
                        ),
                        (passwords[role],),
                    )
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,))
                if cur.fetchone():
                    cur.execute(
                        sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                            sql.Identifier(DB_NAME), sql.Identifier(OWNER_ROLE)
                        )
                    )
                else:
                    log.info("creating database %s owned by %s", DB_NAME, OWNER_ROLE)
                    cur.execute(
                        sql.SQL("CREATE DATABASE {} OWNER {} ENCODING 'UTF8'").format(
                            sql.Identifier(DB_NAME), sql.Identifier(OWNER_ROLE)
                        )
                    )
        finally:
            conn.close()

    def _stop_postgres(self, *, kill: bool) -> None:
        pid = self._postmaster_pid()
        if pid is None:
            return
        # immediate = a crash (no checkpoint; recovery on restart) without orphaning backends.
        mode = "immediate" if kill else "fast"
        log.info("stopping postgres (pid %d, -m %s)", pid, mode)
        started = time.monotonic()
        timeout = int(self.stop_timeout_s)
        result = self._pg_ctl("stop", "-m", mode, "-w", "-t", str(timeout), timeout_s=timeout + 10)
        if result.returncode != 0 and _pid_alive(pid, "postgres"):
            log.warning("pg_ctl stop failed (%s): SIGKILL pid %d", result.stderr.strip(), pid)
            _signal(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while _pid_alive(pid, None) and time.monotonic() < deadline:
                time.sleep(0.1)
        log.info("postgres stopped (%.1f s)", time.monotonic() - started)

    # ---- the whole stack -------------------------------------------------------------------------

    def up(self) -> StackEnv:
        """Start what is needed, wait until everything answers, and return the environment to use.

        For each of Kafka and PostgreSQL: this stack's own running process wins; else a configured
        address that answers is used as is (a Kafka there needs no ZooKeeper from us); else ours starts.
        """
        wanted = tansu.kafka_impl(self.environ)
        with self._locked():
            started = time.monotonic()
            state = self._read_state()
            for name in ("kafka", "postgres"):
                if self.pid(name) is not None:
                    state[name] = "local"
                elif self._configured_answers(name):
                    state[name] = "external"
                    log.info(
                        "%s: using the configured %s (it answers); starting none",
                        name,
                        self._configured(name),
                    )
                else:
                    state[name] = "local"
            if state["kafka"] == "local":
                state["kafka_impl"] = self._choose_kafka_impl(wanted, state.get("kafka_impl"))
                # tansu needs no ZooKeeper; neither does a configured Kafka.
                state["zookeeper"] = "local" if state["kafka_impl"] == "apache" else "unused"
            else:
                state["zookeeper"] = "unused"
            state["ports"] = self.ports
            self._write_state(state)
            if state["postgres"] == "local":
                self._start_postgres()  # first: quick, so a port clash shows before the JVMs start
            if state["kafka"] == "local":
                self._start_broker()
            log.info("stack ready in %.1f s (state in %s)", time.monotonic() - started, self.state_dir)
            return self.env()

    def kafka_impl(self) -> str:
        """apache or tansu: the broker this stack runs (as decided by the last `up()`)."""
        return str(self._read_state().get("kafka_impl", "apache"))

    def _choose_kafka_impl(self, wanted: str, running: str | None) -> str:
        """apache or tansu for this stack's broker: what runs already, else what TXMON_KAFKA_IMPL
        asks; `auto` is Apache Kafka unless its jars cannot be had (then tansu, with a warning)."""
        if self.pid("kafka") is not None and running in ("apache", "tansu"):
            return running
        if wanted != "auto":
            return wanted
        try:
            kafka_lib_dir(environ=self.environ)
        except MavenUnavailable as exc:
            log.warning(
                "%s\nFalling back to the tansu broker (memory only, known quirks: see utils/tansu.py); "
                "TXMON_KAFKA_IMPL=apache makes this an error instead",
                exc,
            )
            return "tansu"
        return "apache"

    def _start_broker(self) -> None:
        """This stack's broker, of the kind the last `up()` chose (and ZooKeeper if it needs one)."""
        if self.kafka_impl() == "tansu":
            self._start_tansu()
        else:
            self._start_zookeeper()
            self._start_kafka()

    def _start_tansu(self) -> None:
        if self.pid("kafka") is not None:
            self._wait_ready("kafka", self._kafka_ready, lambda: self.pid("kafka") is not None, 0)
            return
        self._check_port_free("kafka")
        exe = tansu.binary(cache_dir(self.environ), self.environ)
        (self.state_dir / "kafka").mkdir(parents=True, exist_ok=True)
        log.warning(
            "starting tansu (Kafka-compatible, memory only) on %s, not Apache Kafka", self.kafka_bootstrap
        )
        proc, offset = self._spawn("kafka", tansu.broker_argv(exe, HOST, self.ports["kafka"]))
        self._wait_ready("kafka", self._kafka_ready, lambda: proc.poll() is None, offset)

    def _configured(self, name: str) -> str:
        if name == "kafka":
            return f"KAFKA_BOOTSTRAP_SERVERS={self.existing_kafka}"
        pg = self.existing_postgres
        return f"POSTGRES_HOST:PORT={pg.host}:{pg.port}" if pg else ""

    def _configured_answers(self, name: str) -> bool:
        if name == "kafka" and self.existing_kafka:
            return kafka_answers(self.existing_kafka)
        if name == "postgres" and self.existing_postgres:
            return tcp_answers(self.existing_postgres.host, self.existing_postgres.port)
        return False

    def env(self) -> StackEnv:
        """The environment for the pipeline: this stack's addresses and roles, or the configured ones."""
        state = self._read_state()
        if state.get("kafka") == "external" and self.existing_kafka:
            bootstrap = self.existing_kafka
        else:
            bootstrap = self.kafka_bootstrap
        if state.get("postgres") == "external" and self.existing_postgres:
            pg = self.existing_postgres
            return StackEnv(
                bootstrap,
                pg.host,
                pg.port,
                pg.db,
                pg.user,
                pg.password,
                pg.migration_user,
                pg.migration_password,
            )
        passwords = self._secrets()
        return StackEnv(
            kafka_bootstrap_servers=bootstrap,
            postgres_host=HOST,
            postgres_port=self.ports["postgres"],
            postgres_db=DB_NAME,
            postgres_user=APP_ROLE,
            postgres_password=passwords[APP_ROLE],
            postgres_migration_user=OWNER_ROLE,
            postgres_migration_password=passwords[OWNER_ROLE],
        )

    def superuser_password(self) -> str:
        """The generated `postgres` password (for tests and admin work; never printed by the CLI)."""
        return self._secrets()[SUPERUSER]

    def status(self) -> list[ComponentStatus]:
        state = self._read_state()
        out = []
        for name in COMPONENTS:
            mode = str(state.get(name, "local"))
            if mode == "external":
                address = self.existing_kafka if name == "kafka" else self._configured(name).split("=", 1)[-1]
                out.append(ComponentStatus(name, mode, self.is_up(name), address or ""))
                continue
            pid = self.pid(name)
            if mode == "unused" and pid is None:
                out.append(ComponentStatus(name, mode, False, ""))
                continue
            log_file = self.log_path(name)
            up = pid is not None and self.is_up(name)
            out.append(ComponentStatus(name, "local", up, f"{HOST}:{self.ports[name]}", pid, log_file))
        return out

    def down(self) -> None:
        """Stop every process this stack started (by pidfile); data and passwords stay."""
        with self._locked():
            self._stop_java("kafka", kill=False)  # before ZooKeeper, so it deregisters cleanly
            self._stop_java("zookeeper", kill=False)
            if self.pg_dir.exists():
                self._stop_postgres(kill=False)

    def destroy(self) -> None:
        """`down()`, then remove the state dir (and a relocated PostgreSQL folder): all data is lost."""
        with self._locked():
            self.down()
            pg_dir = self.pg_dir
            if pg_dir.is_relative_to(PG_RELOCATED_BASE):
                shutil.rmtree(pg_dir, ignore_errors=True)
        shutil.rmtree(self.state_dir, ignore_errors=True)
        log.info("removed %s", self.state_dir)

    def __enter__(self) -> LocalStack:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()


def _pid_alive(pid: int, marker: str | None) -> bool:
    """Is `pid` a live (non-zombie) process whose command line contains `marker`?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else (the postgres user)
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            # Field 3, after the parenthesised command name: Z is a zombie (dead, not yet reaped).
            # A JVM's main thread turns Z first while its other threads still hold the sockets.
            zombie = fh.read().rsplit(b")", 1)[1].split()[0] == b"Z"
        if zombie and len(os.listdir(f"/proc/{pid}/task")) <= 1:
            return False
        if marker is not None:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                return marker.encode() in fh.read()
    except (OSError, IndexError):
        return not Path("/proc").is_dir()  # no procfs: trust os.kill
    return True


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def _ensure_topics(bootstrap: str) -> None:
    from utils.kafka_cleanup import admin_client, ensure_topics

    settings = load_settings()
    with contextlib.closing(admin_client(bootstrap)) as admin:
        for topic, outcome in ensure_topics(admin, settings.kafka).items():
            log.info("topic %s: %s", topic, outcome)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m utils.local_stack",
        description="Run ZooKeeper + Kafka + PostgreSQL natively (the Compose design's services).",
        epilog=(
            "Ports: TXMON_STACK_ZK_PORT, TXMON_STACK_KAFKA_PORT, TXMON_STACK_PG_PORT "
            "(default 2181, 9092, 5432). "
            "Broker: TXMON_KAFKA_IMPL=auto|apache|tansu (auto: Apache Kafka, tansu only without Maven). "
            'Cache: TXMON_CACHE_DIR (default ~/.cache/txmon). Usage: eval "$(python -m utils.local_stack up)"'
        ),
    )
    state_help = "data, logs, pidfiles, passwords [default: $TXMON_CACHE_DIR/stack]"
    parser.add_argument("--state-dir", type=Path, default=None, help=state_help)
    # Accepted after the subcommand too (`up --state-dir D`); SUPPRESS keeps the one given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", type=Path, default=argparse.SUPPRESS, help=state_help)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser(
        "up", parents=[common], help="start what is missing, wait until ready, print export lines"
    )
    up.add_argument(
        "--isolated",
        action="store_true",
        help="ignore KAFKA_BOOTSTRAP_SERVERS / POSTGRES_HOST:PORT even if they answer; start everything here",
    )
    up.add_argument(
        "--no-topics",
        action="store_true",
        help="do not create KAFKA_TOPIC and KAFKA_DLQ_TOPIC (only ever created on a broker this stack runs)",
    )
    down = sub.add_parser("down", parents=[common], help="stop what this stack started (data is kept)")
    down.add_argument(
        "--purge", action="store_true", help="also delete the state dir: all data and passwords"
    )
    sub.add_parser("status", parents=[common], help="which components run, where, and their logs")
    sub.add_parser("env", parents=[common], help="print export lines for the running stack")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    try:
        level = load_settings().log_level.upper()
    except Exception:
        level = "INFO"
    # stdout carries only the export lines (for `eval`); progress goes to stderr.
    logging.basicConfig(
        stream=sys.stderr,
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if level != "DEBUG":
        logging.getLogger("kafka").setLevel(logging.CRITICAL)  # refused connections while a broker boots
    try:
        stack = LocalStack.from_env(state_dir=args.state_dir, isolated=getattr(args, "isolated", False))
        if args.command == "up":
            stack_env = stack.up()
            if args.no_topics:
                pass
            elif stack.is_local("kafka"):
                _ensure_topics(stack_env.kafka_bootstrap_servers)
            else:  # a broker someone else runs is used as it is: no side effects on it
                log.info("kafka is external: `make topics` creates the pipeline's topics there if missing")
            sys.stdout.write(export_lines(stack_env.as_environ()))
        elif args.command == "env":
            if not (stack.state_dir / "stack.json").exists():
                raise StackError(f"no stack in {stack.state_dir}: run `make stack-up` (or `up`) first")
            sys.stdout.write(export_lines(stack.env().as_environ()))
        elif args.command == "down":
            if args.purge:
                stack.destroy()
            else:
                stack.down()
        else:
            all_up = True
            for st in stack.status():
                if st.mode == "unused":
                    why = "the broker is tansu" if stack.kafka_impl() == "tansu" else "Kafka is external"
                    print(f"{st.name:<10} unused ({why})")
                    continue
                all_up &= st.up
                where = f"{st.address}" + (f" pid {st.pid}" if st.pid else "")
                extra = f" log {st.log}" if st.log else ""
                print(f"{st.name:<10} {'up' if st.up else 'DOWN':<5}{st.mode:<9} {where}{extra}")
            return 0 if all_up else 1
    except TxmonError as exc:  # StackError, or a ConfigError from the environment / .env
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
