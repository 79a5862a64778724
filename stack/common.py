"""What every component of the native stack needs: its ports and addresses, where its files go,
detached processes with pidfiles, file locks, and probes of a port or a Kafka broker."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from utils.errors import StackError

log = logging.getLogger(__name__)

COMPONENTS = ("zookeeper", "kafka", "postgres")
HOST = "127.0.0.1"
DEFAULT_PORTS = {"zookeeper": 2181, "kafka": 9092, "postgres": 5432}
PORT_ENV = {
    "zookeeper": "TXMON_STACK_ZK_PORT",
    "kafka": "TXMON_STACK_KAFKA_PORT",
    "postgres": "TXMON_STACK_PG_PORT",
}


# --------------------------------------------------------------------------------------------
# Where things go, which ports (pure)
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


def port_variable(name: str) -> str:
    """The variable that moves component `name`'s port; broker i of a cluster (`kafka-i`) listens
    on TXMON_STACK_KAFKA_PORT + i."""
    if name.startswith("kafka-"):
        return f"{PORT_ENV['kafka']} (broker {name.removeprefix('kafka-')} uses it + {name.removeprefix('kafka-')})"
    return PORT_ENV[name]


def port_taken_hint(name: str, port: int, log_text: str) -> str:
    """The fix for a component whose log says its port was taken, else ''."""
    if "Address already in use" in log_text or "BindException" in log_text:
        return f"\nfix: port {port} is taken: set {port_variable(name)} to a free port"
    return ""


# --------------------------------------------------------------------------------------------
# Probes
# --------------------------------------------------------------------------------------------


def tcp_answers(host: str, port: int, timeout_s: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def kafka_answers(
    bootstrap: str,
    timeout_s: float = 3.0,
    *,
    expect_topics: Iterable[str] = (),
    security: Mapping[str, object] | None = None,
    expect_brokers: Iterable[int] = (),
    expect_in_sync: bool = False,
) -> bool:
    """True when a Kafka broker answers a metadata request and the cluster has a controller.

    `expect_topics`: also require these topics in the metadata with a leader for every partition.
    A restarted broker answers before the controller has told it about its old topics; a client
    that asks in that window is told the topic does not exist. `expect_in_sync`: and every
    replica of theirs in the ISR. `expect_brokers`: these broker ids registered in the cluster.
    """
    expected = set(expect_topics)
    brokers = set(expect_brokers)
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
            **(security or {}),  # type: ignore[arg-type]
        )
    except Exception as exc:  # any failure means "not (yet) a usable broker"
        log.debug("kafka probe %s: %s", bootstrap, exc)
        return False
    try:
        cluster = admin.describe_cluster()
        if not cluster.get("brokers") or cluster.get("controller_id", -1) < 0:
            return False
        if not brokers <= {b.get("broker_id") for b in cluster["brokers"]}:
            return False
        if not expected:
            return True
        served = {
            t["name"]
            for t in admin.describe_topics(sorted(expected))
            if t.get("error_code", 0) == 0
            and t.get("partitions")
            and all(
                p.get("leader_id", -1) >= 0
                and (not expect_in_sync or set(p.get("replica_nodes") or ()) <= set(p.get("isr_nodes") or ()))
                for p in t["partitions"]
            )
        }
        return expected <= served
    except Exception as exc:
        log.debug("kafka probe %s: %s", bootstrap, exc)
        return False
    finally:
        admin.close()


def check_port_free(name: str, port: int) -> None:
    """Before starting `name`: nobody else may listen on its port."""
    if tcp_answers(HOST, port, 0.5):
        raise StackError(
            f"port {port} ({name}) is already in use by a process this stack did not start: "
            f"stop it or set {port_variable(name)} to a free port"
        )


# --------------------------------------------------------------------------------------------
# Files and processes
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive flock, held across processes (two `make stack-up`, parallel test sessions)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def render_properties(props: Mapping[str, object]) -> str:
    """A Java .properties file. Backslashes are escaped: Java reads them as escapes."""
    lines = ["# Written by the txmon stack (stack/); rewritten on every start."]
    for key, value in props.items():
        text = str(value).replace("\\", "\\\\").replace("\n", "\\n")
        lines.append(f"{key}={text}")
    return "\n".join(lines) + "\n"


def write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        os.fchmod(fh.fileno(), mode)  # the umask must not widen a secret's mode
        fh.write(text)
    os.replace(tmp, path)


def pid_alive(pid: int, marker: str | None) -> bool:
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


def send_signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


@dataclass(frozen=True, slots=True)
class Runtime:
    """What the components of one stack share: the state dir, the environment, the patience."""

    state_dir: Path
    environ: Mapping[str, str]
    start_timeout_s: float = 120.0
    stop_timeout_s: float = 60.0

    @property
    def as_root(self) -> bool:
        return os.geteuid() == 0


class Daemon:
    """One of the stack's long-running processes (ZooKeeper, a broker): started detached in a
    session of its own, logging to logs/<name>.log, its PID in run/<name>.pid, so that `down`
    run later from another process can stop it.

    A component says how to start it (`argv`, which also writes its configuration), what in its
    command line marks a process as its own (`marker`: a reused PID is not ours) and when it is
    ready; the lifecycle is the same for all of them.
    """

    name = ""

    def __init__(self, rt: Runtime, port: int) -> None:
        self.rt = rt
        self.port = port
        self._proc: subprocess.Popen[bytes] | None = None  # our child, to reap when it stops

    # ---- what a component says ----------------------------------------------------------------

    def marker(self) -> str:
        raise NotImplementedError

    def argv(self) -> list[str]:
        """The command line, once everything it needs is in place."""
        raise NotImplementedError

    def answers(self) -> bool:
        return tcp_answers(HOST, self.port)

    def ready(self) -> bool:
        return self.answers()

    def hint(self, log_text: str) -> str:
        """The fix a failed start's log points at, if this component knows one."""
        return ""

    # ---- the lifecycle -----------------------------------------------------------------------

    @property
    def home(self) -> Path:
        return self.rt.state_dir / self.name

    @property
    def log_path(self) -> Path:
        return self.rt.state_dir / "logs" / f"{self.name}.log"

    @property
    def pidfile(self) -> Path:
        return self.rt.state_dir / "run" / f"{self.name}.pid"

    def pid(self) -> int | None:
        """The PID in the pidfile if that process lives and is ours; stale pidfiles count as None."""
        try:
            pid = int(self.pidfile.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if pid_alive(pid, self.marker()) else None

    def is_up(self) -> bool:
        return self.pid() is not None and self.answers()

    def start(self) -> None:
        """Start it (unless it runs) and wait until it is ready."""
        if self.pid() is not None:
            if not self.ready():  # ours but not ready (yet): give it the normal start-up time
                self._wait_ready(lambda: self.pid() is not None, 0)
            return
        check_port_free(self.name, self.port)
        argv = self.argv()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.pidfile.parent.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            offset = out.tell()
            out.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} stack starting {self.name}\n".encode())
            out.flush()
            # A new session: Ctrl-C in the shell that ran `up` must not reach the services.
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.home,
                start_new_session=True,
                close_fds=True,
            )
        self._proc = proc
        write_atomic(self.pidfile, f"{proc.pid}\n")
        self._wait_ready(lambda: proc.poll() is None, offset)

    def _wait_ready(self, alive: Callable[[], bool], log_offset: int) -> None:
        """Until `ready()`; a StackError with this run's log lines (and the fix they point at)
        if the process dies or the start-up time runs out."""
        started = time.monotonic()
        deadline = started + self.rt.start_timeout_s
        while True:
            if self.ready():
                log.info("%s ready on %s:%d (%.1f s)", self.name, HOST, self.port, time.monotonic() - started)
                return
            if not alive():
                text = tail_text(self.log_path, start=log_offset, lines=400)
                raise StackError(
                    f"{self.name} exited during start-up; last lines of {self.log_path}:\n"
                    f"{tail_text(self.log_path, start=log_offset)}"
                    f"{self.hint(text) or port_taken_hint(self.name, self.port, text)}"
                )
            if time.monotonic() > deadline:
                raise StackError(
                    f"{self.name} not ready on {HOST}:{self.port} after {self.rt.start_timeout_s:.0f} s; "
                    f"last lines of {self.log_path}:\n{tail_text(self.log_path, start=log_offset)}"
                )
            time.sleep(0.2)

    def stop(self, *, kill: bool = False) -> None:
        """SIGTERM (SIGKILL with `kill`, or when SIGTERM is ignored) and wait until the process is
        gone and the port is free; a stale pidfile is just removed."""
        pid = self.pid()
        if pid is None:
            self.pidfile.unlink(missing_ok=True)
            return
        log.info("%s %s (pid %d)", "killing" if kill else "stopping", self.name, pid)
        started = time.monotonic()
        send_signal(pid, signal.SIGKILL if kill else signal.SIGTERM)
        if not self._wait_exit(pid, self.rt.stop_timeout_s):
            log.warning(
                "%s (pid %d) ignored SIGTERM for %.0f s: SIGKILL", self.name, pid, self.rt.stop_timeout_s
            )
            send_signal(pid, signal.SIGKILL)
            if not self._wait_exit(pid, 10):
                raise StackError(f"{self.name} (pid {pid}) survived SIGKILL: check `ps -p {pid}`")
        self.pidfile.unlink(missing_ok=True)
        # The listener can outlive the PID by a moment; a restart must find the port free.
        deadline = time.monotonic() + 10
        while tcp_answers(HOST, self.port, 0.2) and time.monotonic() < deadline:
            time.sleep(0.1)
        log.info("%s stopped (%.1f s)", self.name, time.monotonic() - started)

    def _wait_exit(self, pid: int, timeout_s: float) -> bool:
        proc = self._proc
        if proc is not None and proc.pid == pid:
            try:
                proc.wait(timeout_s)  # reaps our child, so no zombie is left behind
                self._proc = None
                return True
            except subprocess.TimeoutExpired:
                return False
        deadline = time.monotonic() + timeout_s
        while pid_alive(pid, None):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True
