"""Airflow 3's REST API as a user reaches it: a token from /auth/token, then /api/v2."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote

TERMINAL = {"success", "failed"}
# A task in one of these has failed at least once; with retries the run would go on for minutes.
FAILED_TASK_STATES = {"failed", "up_for_retry", "upstream_failed"}


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class AirflowAPI:
    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._credentials = {"username": username, "password": password}
        self._token: str | None = None

    def _request(self, method: str, path: str, body: Any = None, *, auth: bool = True) -> Any:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        request = urllib.request.Request(
            self.base_url + path,
            data=None if body is None else json.dumps(body).encode(),
            headers=headers,
            method=method,
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{method} {path}: HTTP {exc.code}: {exc.read()[:2000]!r}") from exc
        if not raw:
            return None
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return raw.decode(errors="replace")

    def token(self) -> str:
        if self._token is None:
            self._token = self._request("POST", "/auth/token", self._credentials, auth=False)["access_token"]
        return self._token

    def health(self) -> dict[str, Any]:
        return self._request("GET", "/api/v2/monitor/health", auth=False)

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        run = self._request(
            "POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}}
        )
        return str(run["dag_run_id"])

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return dict(self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}"))

    def run_state(self, dag_id: str, run_id: str) -> str:
        return str(self.run(dag_id, run_id)["state"])

    def plugins(self) -> list[dict[str, Any]]:
        return list(self._request("GET", "/api/v2/plugins")["plugins"])

    def fetch(self, path: str, *, signed_in: bool = True) -> tuple[int, dict[str, str], bytes]:
        """GET a page as a browser would, signed in (a bearer token) or not, without following
        redirects: (status, lower-cased headers, body)."""
        headers = {"Authorization": f"Bearer {self.token()}"} if signed_in else {}
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(urllib.request.Request(self.base_url + path, headers=headers), timeout=30) as r:
                return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()

    def runs(self, dag_id: str, run_type: str) -> list[str]:
        found = self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns?run_type={run_type}&limit=100")
        return sorted(str(run["dag_run_id"]) for run in found["dag_runs"])

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances"
        return list(self._request("GET", path)["task_instances"])

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int) -> str:
        path = (
            f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}/logs/{try_number}"
            "?full_content=true"
        )
        return json.dumps(self._request("GET", path), indent=1)[-4000:]

    def wait_for_run(self, dag_id: str, run_id: str, timeout_s: float) -> str:
        """The run's final state; stops early, as failed, when any task has failed once,
        and then returns that task's log in the message."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            state = self.run_state(dag_id, run_id)
            if state in TERMINAL:
                return state
            for ti in self.task_instances(dag_id, run_id):
                if ti.get("state") in FAILED_TASK_STATES:
                    log = self.task_log(dag_id, run_id, ti["task_id"], max(1, int(ti.get("try_number") or 1)))
                    raise AssertionError(f"{dag_id} task {ti['task_id']} is {ti['state']}:\n{log}")
            time.sleep(2)
        states = {ti["task_id"]: ti.get("state") for ti in self.task_instances(dag_id, run_id)}
        raise AssertionError(f"{dag_id} run {run_id} not finished after {timeout_s:.0f}s: {states}")
