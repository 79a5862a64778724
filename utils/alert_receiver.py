"""Where Alertmanager delivers the Compose stack's alerts: one JSON line per alert, kept and served.

    python -m utils.alert_receiver --port 9095 --log /var/lib/txmon-alerts/alerts.jsonl

- `POST /alerts`: an Alertmanager webhook (payload version 4). Each alert in it becomes one JSON
  line (`alert_lines`): its status, labels, annotations, start and end, the receiver and when it
  arrived. The lines are appended to `--log` (a volume: the alert log survives restarts) and
  printed on stdout (`docker compose logs alert-receiver`).
- `GET /alerts`: every line received so far, as a JSON array (`?alertname=NAME` keeps one alert's).
- `GET /healthz`: 200 once listening.

A webhook receiver any team replaces with its pager or chat integration in
docker/alertmanager/alertmanager.yml; the project keeps this one so the tests (and a person
without a pager) can read what was delivered.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger("alert_receiver")

# Alertmanager's payloads are a few kB per alert; anything near this is not one.
MAX_BODY_BYTES = 1_000_000
KEPT_FIELDS = ("status", "labels", "annotations", "startsAt", "endsAt", "fingerprint")


class BadPayload(ValueError):
    """The body is not an Alertmanager webhook payload."""


def alert_lines(payload: Any, received_at: str) -> list[dict[str, Any]]:
    """One record per alert of an Alertmanager webhook `payload` (already JSON-decoded)."""
    if not isinstance(payload, Mapping) or not isinstance(payload.get("alerts"), list):
        raise BadPayload("not an Alertmanager webhook payload: no 'alerts' list")
    lines = []
    for alert in payload["alerts"]:
        if not isinstance(alert, Mapping) or not isinstance(alert.get("labels"), Mapping):
            raise BadPayload("an alert without labels")
        record: dict[str, Any] = {"received_at": received_at, "receiver": payload.get("receiver", "")}
        record.update({k: alert[k] for k in KEPT_FIELDS if k in alert})
        lines.append(record)
    return lines


def matching(lines: Sequence[Mapping[str, Any]], alertname: str | None) -> list[Mapping[str, Any]]:
    return [x for x in lines if alertname is None or x.get("labels", {}).get("alertname") == alertname]


class AlertLog:
    """The JSON-lines file, appended under a lock (the server answers requests in threads)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(exist_ok=True)

    def append(self, lines: Sequence[Mapping[str, Any]]) -> None:
        text = "".join(json.dumps(line, sort_keys=True) + "\n" for line in lines)
        with self._lock, self.path.open("a", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()

    def read(self) -> list[dict[str, Any]]:
        with self._lock:
            text = self.path.read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines() if line.strip()]


def make_handler(alert_log: AlertLog) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "txmon-alert-receiver"

        def do_POST(self) -> None:
            if urlsplit(self.path).path != "/alerts":
                self._send(HTTPStatus.NOT_FOUND, {"error": "POST /alerts"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length <= 0 or length > MAX_BODY_BYTES:
                self._send(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": f"body of {length} bytes"})
                return
            try:
                payload = json.loads(self.rfile.read(length))
                lines = alert_lines(payload, datetime.now(UTC).isoformat())
            except (ValueError, BadPayload) as exc:
                self._send(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
                return
            alert_log.append(lines)
            for line in lines:
                # The log is the second place alerts go: docker compose logs alert-receiver.
                print(json.dumps(line, sort_keys=True), flush=True)
            self._send(HTTPStatus.OK, {"received": len(lines)})

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path == "/healthz":
                self._send(HTTPStatus.OK, {"ok": True})
            elif url.path == "/alerts":
                name = parse_qs(url.query).get("alertname", [None])[0]
                self._send(HTTPStatus.OK, matching(alert_log.read(), name))
            else:
                self._send(HTTPStatus.NOT_FOUND, {"error": "GET /alerts or /healthz"})

        def _send(self, status: HTTPStatus, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug(format, *args)  # the alerts themselves are the log; requests are noise

    return Handler


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m utils.alert_receiver", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--address", default="0.0.0.0", help="listen address (default: %(default)s)")
    parser.add_argument("--port", type=int, default=9095, help="listen port (default: %(default)s)")
    parser.add_argument("--log", type=Path, required=True, help="the JSON-lines file alerts are appended to")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    server = ThreadingHTTPServer((args.address, args.port), make_handler(AlertLog(args.log)))
    log.info(
        "receiving Alertmanager webhooks on %s:%d/alerts, appending to %s", args.address, args.port, args.log
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
