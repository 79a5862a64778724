"""The webhook receiver Alertmanager delivers to (utils/alert_receiver.py): an Alertmanager
payload in, one JSON line per alert in the file and back on GET /alerts, over real HTTP on loopback."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from utils.alert_receiver import AlertLog, BadPayload, alert_lines, make_handler

# The shape Alertmanager 0.25 posts (webhook payload version 4), trimmed to what matters.
PAYLOAD = {
    "version": "4",
    "status": "firing",
    "receiver": "txmon-alert-log",
    "groupLabels": {"alertname": "TxmonRuleSetActivated", "group": "g"},
    "alerts": [
        {
            "status": "firing",
            "labels": {
                "alertname": "TxmonRuleSetActivated",
                "group": "g",
                "version": "4",
                "activated_by": "alice",
            },
            "annotations": {"summary": "alice activated rule-set version 4 for group g"},
            "startsAt": "2026-11-28T09:30:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph",
            "fingerprint": "abc123",
        },
        {
            "status": "resolved",
            "labels": {"alertname": "TxmonConsumerDown", "instance": "c1:9102"},
            "annotations": {},
            "startsAt": "2026-11-28T09:00:00Z",
            "endsAt": "2026-11-28T09:10:00Z",
            "fingerprint": "def456",
        },
    ],
}


def test_one_line_per_alert_with_what_a_reader_needs() -> None:
    lines = alert_lines(PAYLOAD, "2026-11-28T09:30:12+00:00")
    assert [line["labels"]["alertname"] for line in lines] == ["TxmonRuleSetActivated", "TxmonConsumerDown"]
    assert lines[0] == {
        "received_at": "2026-11-28T09:30:12+00:00",
        "receiver": "txmon-alert-log",
        "status": "firing",
        "labels": PAYLOAD["alerts"][0]["labels"],  # type: ignore[index]
        "annotations": {"summary": "alice activated rule-set version 4 for group g"},
        "startsAt": "2026-11-28T09:30:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "fingerprint": "abc123",
    }
    assert lines[1]["status"] == "resolved"


@pytest.mark.parametrize("payload", [[], {"alerts": "x"}, {"alerts": [{"status": "firing"}]}, None])
def test_anything_else_is_refused(payload: Any) -> None:
    with pytest.raises(BadPayload):
        alert_lines(payload, "t")


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    path = tmp_path / "alerts" / "alerts.jsonl"
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(AlertLog(path)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", path
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _post(url: str, body: bytes) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def test_delivered_alerts_are_kept_and_served_back(receiver: tuple[str, Path]) -> None:
    base, path = receiver
    assert _post(f"{base}/alerts", json.dumps(PAYLOAD).encode()) == (200, {"received": 2})
    assert _post(f"{base}/alerts", json.dumps(PAYLOAD).encode()) == (200, {"received": 2})
    kept = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(kept) == 4 and kept == _get(f"{base}/alerts")
    activated = _get(f"{base}/alerts?alertname=TxmonRuleSetActivated")
    assert [a["labels"]["activated_by"] for a in activated] == ["alice", "alice"]
    assert _get(f"{base}/healthz") == {"ok": True}
    # A restarted receiver (same file) serves what came before.
    assert AlertLog(path).read() == kept


def test_a_malformed_delivery_is_refused_and_keeps_nothing(receiver: tuple[str, Path]) -> None:
    base, path = receiver
    status, body = _post(f"{base}/alerts", b"{not json")
    assert status == 400 and "error" in body
    status, _ = _post(f"{base}/alerts", json.dumps({"alerts": [{}]}).encode())
    assert status == 400
    assert path.read_text() == ""
