"""Prometheus endpoints: one `/metrics` HTTP server per process, on its own registry.

The producer (producer/metrics.py) and the consumer (consumer/metrics.py) define what they
expose; this module only serves it. Collection happens when Prometheus scrapes, in the server's
thread, so nothing here runs on the hot path.
"""

from __future__ import annotations

import logging
import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.process_collector import ProcessCollector

from utils.errors import ConfigError

log = logging.getLogger(__name__)


class MetricsServer:
    """A running /metrics endpoint; `close()` stops it (tests; processes just exit)."""

    def __init__(self, server: WSGIServer, thread: threading.Thread, url: str) -> None:
        self._server = server
        self._thread = thread
        self.url = url

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def new_registry() -> CollectorRegistry:
    """A registry of our own (not the library's global one), with the process's CPU and memory."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    return registry


def serve(registry: CollectorRegistry, port: int, address: str, variable: str) -> MetricsServer | None:
    """Serve `registry` on address:port; None when `port` is 0 (metrics off). `variable` names
    the setting that chose the port, for the error message."""
    if port == 0:
        return None
    try:
        server, thread = start_http_server(port, addr=address, registry=registry)
    except (OSError, OverflowError) as exc:
        raise ConfigError(
            f"{variable}={port}: cannot serve metrics on {address}:{port} ({exc}); choose a free port "
            "(each process on a host needs its own), or 0 to turn metrics off"
        ) from exc
    url = f"http://{address}:{port}/metrics"
    log.info("metrics on %s", url, extra={"metrics_url": url})
    return MetricsServer(server, thread, url)
