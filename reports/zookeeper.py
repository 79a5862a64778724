"""ZooKeeper's health as the monitoring DAG sees it: the four-letter words `ruok` and `srvr`,
their answer parsed into metrics.

`zk_command` is also what the native dev stack uses to wait for its ZooKeeper; the dependency
runs that way (dev tooling imports this module), never back.
"""

from __future__ import annotations

import contextlib
import re
import socket
from collections.abc import Mapping

from reports.metrics import CheckResult, Metric


def zk_command(port: int, command: str, *, host: str = "127.0.0.1", timeout_s: float = 2.0) -> str:
    """Send a four-letter word and return the whole answer; '' if nothing answers."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(command.encode())
            sock.shutdown(socket.SHUT_WR)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode("utf-8", "replace")
    except OSError:
        return ""


_SRVR_LINE = re.compile(r"^([A-Za-z][A-Za-z /]*):\s*(.*)$")


def parse_srvr(text: str) -> dict[str, str]:
    """ZooKeeper's `srvr` answer as {field: value}, e.g. 'Mode': 'standalone', 'Node count': '42'."""
    out = {}
    for line in text.splitlines():
        m = _SRVR_LINE.match(line.strip())
        if m:
            out[m.group(1).strip()] = m.group(2).strip()
    return out


def zookeeper_metrics(srvr: Mapping[str, str], labels: Mapping[str, str]) -> list[Metric]:
    metrics = []
    latency = srvr.get("Latency min/avg/max", "")
    parts = latency.split("/")
    if len(parts) == 3:
        with contextlib.suppress(ValueError):
            metrics.append(Metric("zookeeper_latency_avg_ms", float(parts[1]), labels))
            metrics.append(Metric("zookeeper_latency_max_ms", float(parts[2]), labels))
    for key, name in (
        ("Connections", "zookeeper_connections"),
        ("Outstanding", "zookeeper_outstanding_requests"),
        ("Node count", "zookeeper_node_count"),
    ):
        with contextlib.suppress(KeyError, ValueError):
            metrics.append(Metric(name, float(srvr[key]), labels))
    return metrics


def check_zookeeper(host: str, port: int) -> CheckResult:
    result = CheckResult("zookeeper")
    where = f"{host}:{port}"
    labels = {"server": where}
    answer = zk_command(port, "ruok", host=host).strip()
    if answer != "imok":
        reason = f"answered {answer!r}" if answer else "does not answer"
        result.problems.append(
            f"zookeeper at {where} {reason} to ruok (is it running? is `ruok` whitelisted?)"
        )
        return result
    srvr = parse_srvr(zk_command(port, "srvr", host=host))
    result.details = {"address": where, "mode": srvr.get("Mode", "?"), "srvr": srvr}
    result.metrics = zookeeper_metrics(srvr, labels)
    return result
