"""PostgreSQL for the native stack: binaries, a cluster of its own, the pipeline's roles.

The binaries come from the `pgserver` wheel (PostgreSQL 16), TXMON_PG_BIN, or a system install
(/usr/lib/postgresql/*/bin). initdb and postgres refuse to run as root: as root they run as the
system user `txmon` (created if missing). Passwords are generated once into the state dir's
secrets.json (0600); the roles, the database and who may connect come from utils/roles.py, the
definition Compose's db-roles service applies too.
"""

from __future__ import annotations

import grp
import hashlib
import importlib.util
import json
import logging
import os
import pwd
import re
import secrets
import shlex
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import psycopg2
import psycopg2.extensions

from stack.common import (
    HOST,
    Runtime,
    check_port_free,
    pid_alive,
    port_taken_hint,
    send_signal,
    tail_text,
    tcp_answers,
    write_atomic,
)
from utils import roles
from utils.errors import StackError

log = logging.getLogger(__name__)

DB_NAME = "transactions"
SUPERUSER = roles.SUPERUSER
OWNER_ROLE = "txmon_owner"
APP_ROLE = "txmon_app"
RETENTION_ROLE = "txmon_retention"
CONSOLE_ROLE = "txmon_console"
ROLE_NAMES = roles.RoleNames(owner=OWNER_ROLE, app=APP_ROLE, retention=RETENTION_ROLE, console=CONSOLE_ROLE)
# initdb and postgres refuse to run as root; as root we run them as this system user.
PG_SYSTEM_USER = "txmon"
# As root, a data dir under a folder the system user cannot traverse (/root is 0700) moves here.
PG_RELOCATED_BASE = Path("/var/lib/txmon")
# A Unix socket path longer than this (sun_path is 108 bytes) makes postgres refuse to start.
_MAX_SOCKET_PATH = 100


# --------------------------------------------------------------------------------------------
# Binaries and the user that runs them
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
# The server
# --------------------------------------------------------------------------------------------


# A write-heavy server's settings, as docker-compose.yml's postgres has them. PostgreSQL's
# defaults (max_wal_size 1GB, checkpoint_timeout 5min, shared_buffers 128MB) made the 10,000,000-
# row bench checkpoint every 4-5 s: after each checkpoint the first change to every index page
# writes the whole page to the WAL, and as the day partition's b-trees grew, nearly every insert
# touched such a page, so PostgreSQL's CPU per row rose 25 -> 62 µs (docs/performance-investigations.md "The
# long run"). Fewer checkpoints and the hot index pages in shared buffers keep it flat.
WRITE_TUNING: tuple[tuple[str, str], ...] = (
    ("shared_buffers", "512MB"),
    ("max_wal_size", "8GB"),
    ("checkpoint_timeout", "15min"),
)


class Postgres:
    """One cluster under `<state dir>/postgres` (data, socket, log), run with pg_ctl."""

    name = "postgres"

    def __init__(self, rt: Runtime, port: int) -> None:
        self.rt = rt
        self.port = port
        self._bin: Path | None = None

    @property
    def pg_dir(self) -> Path:
        """PostgreSQL's folder: data, socket, log.

        As root the server runs as PG_SYSTEM_USER, which cannot reach a state dir under /root
        (mode 0700) or pytest's tmp; then the folder lives under PG_RELOCATED_BASE, keyed by the
        state dir, with a symlink from the state dir so it can be found.
        """
        state_dir = self.rt.state_dir
        local = state_dir / "postgres"
        if not self.rt.as_root:
            return local
        key = hashlib.sha256(str(state_dir).encode()).hexdigest()[:12]
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
        existing = next((p for p in [state_dir, *state_dir.parents] if p.exists()), Path("/"))
        return local if _reachable_by(existing, user) else relocated

    @property
    def data_dir(self) -> Path:
        return self.pg_dir / "data"

    @property
    def log_path(self) -> Path:
        return self.pg_dir / "postgres.log"  # written by pg_ctl as the postgres user

    @property
    def secrets_path(self) -> Path:
        return self.rt.state_dir / "secrets.json"

    def pid(self) -> int | None:
        """The postmaster's PID, from its own pidfile."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if pid_alive(pid, "postgres") else None

    def is_up(self) -> bool:
        return self.pid() is not None and tcp_answers(HOST, self.port)

    # ---- passwords -----------------------------------------------------------------------------

    def passwords(self) -> dict[str, str]:
        """Generated passwords (superuser, owner, app, retention, console): created once, 0600,
        reused across restarts. A role added later (retention, console) gets its password added
        to the file."""
        path = self.secrets_path
        keys = (SUPERUSER, OWNER_ROLE, APP_ROLE, RETENTION_ROLE, CONSOLE_ROLE)
        try:
            data = json.loads(path.read_text())
            if all(isinstance(data.get(k), str) and data[k] for k in keys[:3]):
                added = [k for k in keys[3:] if not (isinstance(data.get(k), str) and data[k])]
                for k in added:
                    data[k] = secrets.token_urlsafe(24)
                if added:
                    write_atomic(path, json.dumps(data, indent=2) + "\n", mode=0o600)
                return {k: data[k] for k in keys}
        except (OSError, ValueError):
            pass
        if (self.data_dir / "PG_VERSION").exists():
            raise StackError(
                f"{path} is missing or broken but the cluster in {self.data_dir} exists: "
                f"restore the file, or remove {self.pg_dir} to start PostgreSQL over (its data is lost)"
            )
        values = {k: secrets.token_urlsafe(24) for k in keys}
        self.rt.state_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(values, indent=2) + "\n", mode=0o600)
        return values

    # ---- running it ----------------------------------------------------------------------------

    def _system_user(self) -> pwd.struct_passwd | None:
        return _ensure_system_user(PG_SYSTEM_USER) if self.rt.as_root else None

    def _as_system_user(self, argv: list[str]) -> list[str]:
        if not self.rt.as_root:
            return argv
        runuser = shutil.which("runuser") or "/usr/sbin/runuser"
        return [runuser, "-u", PG_SYSTEM_USER, "--", *argv]

    def bin_dir(self) -> Path:
        if self._bin is not None:
            return self._bin
        user = self._system_user()
        candidates = _pg_bin_candidates(self.rt.environ)
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
            wanted = (self.data_dir / "PG_VERSION").read_text().strip()
        except OSError:
            wanted = ""
        if wanted:
            matching = [c for c in candidates if _pg_major(c) == wanted]
            if not matching:
                raise StackError(
                    f"the cluster in {self.data_dir} is PostgreSQL {wanted}, and no "
                    f"PostgreSQL {wanted} binaries were found: install them, set TXMON_PG_BIN, "
                    "or remove that folder (data lost)"
                )
            candidates = matching
        self._bin = candidates[0]
        return self._bin

    def _prepare_pg_dir(self) -> Path:
        pg_dir = self.pg_dir
        user = self._system_user()
        pg_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if user is not None:
            os.chown(pg_dir, user.pw_uid, user.pw_gid)
            local = self.rt.state_dir / "postgres"
            if pg_dir != local and not local.is_symlink():
                local.symlink_to(pg_dir, target_is_directory=True)  # so `ls state_dir` finds it
        return pg_dir

    def _pg_ctl(self, *args: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
        argv = self._as_system_user([str(self.bin_dir() / "pg_ctl"), "-D", str(self.data_dir), *args])
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
        user = self._system_user()
        pwfile = pg_dir / ".pwfile"
        write_atomic(pwfile, superuser_password + "\n", mode=0o600)
        if user is not None:
            os.chown(pwfile, user.pw_uid, user.pw_gid)
        log.info("initdb %s (PostgreSQL from %s)", data, self.bin_dir())
        try:
            argv = self._as_system_user([
                str(self.bin_dir() / "initdb"), "-D", str(data), "-U", SUPERUSER,
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

    def start(self) -> None:
        """Start the cluster (initdb the first time) and provision the roles; idempotent."""
        if self.pid() is not None and tcp_answers(HOST, self.port):
            self.provision()
            return
        if self.pid() is None:
            check_port_free(self.name, self.port)  # before a slow initdb
        pg_dir = self._prepare_pg_dir()
        passwords = self.passwords()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(pg_dir, passwords[SUPERUSER])
        if self.pid() is None:  # a postmaster that is up but not yet listening: just wait
            check_port_free(self.name, self.port)
            self._pg_ctl_start(pg_dir)
        self.provision()

    def _pg_ctl_start(self, pg_dir: Path) -> None:
        sock_dir = pg_dir / "run"
        sock_dir.mkdir(exist_ok=True, mode=0o700)
        user = self._system_user()
        if user is not None:
            os.chown(sock_dir, user.pw_uid, user.pw_gid)
        if len(str(sock_dir / ".s.PGSQL.65535")) <= _MAX_SOCKET_PATH:
            sock_opt = f"-k {shlex.quote(str(sock_dir))}"
        else:
            sock_opt = "-c unix_socket_directories=''"  # TCP only; the pipeline never uses the socket
        # pg_ctl hands -o to a shell: quote paths.
        # Commit timestamps: the benchmark measures latency to the COMMIT that makes a row
        # visible (pg_xact_commit_timestamp), not only to processed_at (bench/harness.py).
        opts = (
            f"-p {self.port} {sock_opt} -c listen_addresses={HOST} -c track_commit_timestamp=on "
            + " ".join(f"-c {name}={value}" for name, value in WRITE_TUNING)
        )
        log_file = self.log_path
        offset = log_file.stat().st_size if log_file.exists() else 0
        log.info("starting postgres on %s:%d (%s)", HOST, self.port, self.data_dir)
        started = time.monotonic()
        timeout = int(self.rt.start_timeout_s)
        try:
            result = self._pg_ctl(
                "-o", opts, "-l", str(log_file), "-w", "-t", str(timeout), "start", timeout_s=timeout + 10
            )
        except subprocess.TimeoutExpired:
            result = None
        if result is None or result.returncode != 0:
            said = (result.stdout + result.stderr).strip() if result else "pg_ctl timed out"
            text = tail_text(log_file, start=offset, lines=400)
            raise StackError(
                f"postgres did not start on {HOST}:{self.port}: {said}\n"
                f"last lines of {log_file}:\n{tail_text(log_file, start=offset)}"
                f"{port_taken_hint(self.name, self.port, text)}"
            )
        log.info("postgres ready on %s:%d (%.1f s)", HOST, self.port, time.monotonic() - started)

    def connect_superuser(self, dbname: str = "postgres") -> psycopg2.extensions.connection:
        """A connection as the superuser, waiting while the server finishes starting (after a
        crash it recovers first)."""
        password = self.passwords()[SUPERUSER]
        deadline = time.monotonic() + self.rt.start_timeout_s
        while True:
            try:
                return psycopg2.connect(
                    host=HOST,
                    port=self.port,
                    dbname=dbname,
                    user=SUPERUSER,
                    password=password,
                    connect_timeout=5,
                    application_name="txmon-local-stack",
                )
            except psycopg2.OperationalError as exc:
                if "password authentication failed" in str(exc):
                    raise StackError(
                        f"the postgres password in {self.secrets_path} does not match the cluster in "
                        f"{self.data_dir}: restore the file or remove that folder (data lost)"
                    ) from None
                if time.monotonic() > deadline:
                    raise StackError(f"postgres on {HOST}:{self.port} refuses connections: {exc}") from None
                time.sleep(0.3)  # "the database system is starting up" after a crash restart

    def provision(self) -> None:
        """The roles, the database and who may connect, as utils/roles.py defines them;
        passwords re-set every time so they always match secrets.json."""
        passwords = self.passwords()
        conn = self.connect_superuser()
        try:
            roles.provision(conn, DB_NAME, ROLE_NAMES, passwords)
        finally:
            conn.close()

    def stop(self, *, kill: bool = False) -> None:
        """`kill`: an immediate shutdown (a crash: no checkpoint, recovery on the next start)
        that, unlike SIGKILL, does not orphan the backends."""
        pid = self.pid()
        if pid is None:
            return
        mode = "immediate" if kill else "fast"
        log.info("stopping postgres (pid %d, -m %s)", pid, mode)
        started = time.monotonic()
        timeout = int(self.rt.stop_timeout_s)
        result = self._pg_ctl("stop", "-m", mode, "-w", "-t", str(timeout), timeout_s=timeout + 10)
        if result.returncode != 0 and pid_alive(pid, "postgres"):
            log.warning("pg_ctl stop failed (%s): SIGKILL pid %d", result.stderr.strip(), pid)
            send_signal(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while pid_alive(pid, None) and time.monotonic() < deadline:
                time.sleep(0.1)
        log.info("postgres stopped (%.1f s)", time.monotonic() - started)

    def remove_relocated(self) -> None:
        """Delete the cluster's folder if it lives outside the state dir (see `pg_dir`)."""
        pg_dir = self.pg_dir
        if pg_dir.is_relative_to(PG_RELOCATED_BASE):
            shutil.rmtree(pg_dir, ignore_errors=True)
