"""Prometheus's HTTP API as an operator reaches it from the host: /api/v1 on the published port."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from typing import Any


class PrometheusAPI:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")

    def _get(self, path: str, **params: str) -> Any:
        url = f"{self.base_url}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        with urllib.request.urlopen(url, timeout=30) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def front_page(self) -> str:
        """What a browser shows at the URL `make compose-up` prints (redirects followed)."""
        with urllib.request.urlopen(self.base_url + "/", timeout=30) as response:
            return str(response.read().decode(errors="replace"))

    def targets(self, job: str) -> list[dict[str, Any]]:
        """The active targets of `job`, as the Targets page lists them."""
        active = self._get("/api/v1/targets", state="active")["activeTargets"]
        return [t for t in active if t["labels"].get("job") == job]

    def samples(self, selector: str, window: str = "10m") -> list[float]:
        """The values `selector` (one series) took over `window`, oldest first."""
        result = self._get("/api/v1/query", query=f"{selector}[{window}]")["result"]
        assert len(result) <= 1, f"{selector} matches {len(result)} series"
        return [float(value) for _, value in result[0]["values"]] if result else []

    def alerting_rules(self) -> dict[str, str]:
        """Loaded alerting rules: name -> health (ok once evaluated, unknown before)."""
        groups = self._get("/api/v1/rules", type="alert")["groups"]
        return {rule["name"]: rule["health"] for group in groups for rule in group["rules"]}
