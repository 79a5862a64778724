"""The txmon Airflow plugin's report pages, without a running Airflow: the list of reports says
each day's state, only our own files are served, and a missing day says how to make it. (Notes
and sign-in are tested through dag.test() and the browser walkthrough.)"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

PLUGIN = Path(__file__).resolve().parents[2] / "plugins" / "txmon_plugin.py"


@pytest.fixture(scope="module")
def plugin() -> ModuleType:
    spec = importlib.util.spec_from_file_location("txmon_plugin_under_test", PLUGIN)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _day(root: Path, day: str, total: int, completeness: dict[str, object]) -> None:
    (root / day).mkdir(parents=True)
    figures = {
        "summary": [{"dimension": "total", "key": "", "txn_count": total}],
        "completeness": completeness,
    }
    (root / day / "figures.json").write_text(json.dumps(figures))
    (root / day / "report.html").write_text(f"<title>{day}</title>")


def test_the_list_of_reports_says_each_days_state(plugin: ModuleType, tmp_path: Path) -> None:
    _day(tmp_path, "2026-11-27", 60000, {"complete": True, "day_over": True})
    _day(tmp_path, "2026-11-28", 3000, {"complete": False, "day_over": False})
    _day(tmp_path, "2026-11-26", 0, {"complete": True, "day_over": True})
    (tmp_path / "notes").mkdir()
    page = plugin._index_page(tmp_path)
    assert page.index("2026-11-28") < page.index("2026-11-27") < page.index("2026-11-26")  # newest first
    assert "3,000 transactions, day not over" in page and "60,000 transactions, complete" in page
    assert "no transactions" in page and "notes" not in page
    assert "No report yet" in plugin._index_page(tmp_path / "missing")


def test_only_report_files_are_served(
    plugin: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi.testclient import TestClient

    _day(tmp_path, "2026-11-27", 1, {"complete": True, "day_over": True})
    (tmp_path / "secret.txt").write_text("not a report")
    monkeypatch.setattr(plugin, "_reports_root", lambda: tmp_path)
    app = plugin.create_app()
    app.dependency_overrides[plugin._reader] = lambda: None  # signed in (the walkthrough checks sign-in)
    client = TestClient(app)
    assert client.get("/reports/2026-11-27/report.html").text == "<title>2026-11-27</title>"
    for bad in (
        "/reports/2026-11-27/../secret.txt",
        "/reports/..%2Fsecret.txt/report.html",
        "/reports/2026-11-27/x.py",
    ):
        assert client.get(bad).status_code == 404, bad
    missing = client.get("/reports/2026-11-29/report.html")
    assert (
        missing.status_code == 404 and "trigger transaction_reporting with the day 2026-11-29" in missing.text
    )


def test_report_files_are_not_followed_through_symlinks_and_carry_security_headers(
    plugin: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi.testclient import TestClient

    root = tmp_path / "reports"
    _day(root, "2026-11-27", 1, {"complete": True, "day_over": True})
    secret = tmp_path / "env"
    secret.write_text("POSTGRES_PASSWORD=s3cret")
    (root / "2026-11-27" / "summary.csv").symlink_to(secret)  # a link planted beside a real report
    (root / "2026-11-28").symlink_to(tmp_path)  # a day folder that is a link
    (tmp_path / "report.html").write_text("outside the reports folder")
    monkeypatch.setattr(plugin, "_reports_root", lambda: root)
    app = plugin.create_app()
    app.dependency_overrides[plugin._reader] = lambda: None
    client = TestClient(app)
    for bad in ("/reports/2026-11-27/summary.csv", "/reports/2026-11-28/report.html"):
        response = client.get(bad)
        assert (
            response.status_code == 404 and "s3cret" not in response.text and "outside" not in response.text
        )
    ok = client.get("/reports/2026-11-27/report.html")
    assert ok.status_code == 200 and ok.headers["content-type"].startswith("text/html")
    for response in (ok, client.get("/reports/"), client.get("/reports/2026-11-27/summary.csv")):
        assert "default-src 'none'" in response.headers["content-security-policy"]
        assert "script-src" not in response.headers["content-security-policy"]  # no script at all
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["cache-control"] == "no-store"
