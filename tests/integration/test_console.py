"""The console over HTTP against a real PostgreSQL: who may see and do what, CSRF, hostile text,
lockout, the database role's limits, and parallel attaches that must yield one open case."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import re
from collections.abc import Iterator

import psycopg2
import psycopg2.errors
import pytest

from console.app import LOGIN_CSRF_COOKIE, SESSION_COOKIE
from tests.console_support import HOSTILE, PASSWORD, Seeded, csrf_of, owner_rows, seed, serve, signed_in
from utils.config import PostgresSettings, Settings
from utils.database import connect

# Every page and form of the console, with a real id where one is needed (filled in per test).
PAGES = [
    "/",
    "/alerts",
    "/alerts?rule=velocity",
    "/alerts/{alert}",
    "/cases",
    "/cases/{case}",
    "/cases/{case}/export",
    "/cases/{case}/export.json",
    "/accounts/ACC-0000",
    "/rules",
    "/dlq",
]
FORMS = [
    "/logout",
    "/alerts/{alert}/attach",
    "/cases",
    "/cases/claim-next",
    "/cases/{case}/act",
    "/cases/{case}/attach",
    "/cases/{case}/link",
    "/rules/backtest",
    "/rules/publish",
    "/dlq/1/replay",
]


@pytest.fixture
def console(fresh_db: PostgresSettings) -> Iterator[tuple[str, Seeded, PostgresSettings]]:
    seeded = seed(fresh_db)
    settings = dataclasses.replace(Settings(), postgres=fresh_db)
    with serve(settings) as base:
        yield base, seeded, fresh_db


def _case_for(base: str, alert_id: int) -> int:
    client = signed_in(base, "ana")
    r = client.post(f"/alerts/{alert_id}/attach", data={"csrf_token": csrf_of(client)})
    assert r.status_code == 303, r.text
    return int(r.headers["location"].split("/")[2].split("?")[0])


def test_anonymous_users_see_nothing_and_forms_need_their_csrf_token(
    console: tuple[str, Seeded, PostgresSettings],
) -> None:
    base, seeded, _ = console
    case = _case_for(base, seeded.alert_ids[0])
    ids = {"alert": seeded.alert_ids[0], "case": case}
    import httpx

    anonymous = httpx.Client(base_url=base, follow_redirects=False, timeout=30)
    for path in PAGES:
        r = anonymous.get(path.format(**ids))
        assert r.status_code in (303, 401), (path, r.status_code)
        assert "ACC-" not in r.text and "tx-" not in r.text, path  # not one byte of data
        if r.status_code == 303:
            assert r.headers["location"].startswith("/login"), path
    for path in FORMS:
        r = anonymous.post(path.format(**ids), data={"csrf_token": "x", "alert_id": "1", "other": "1"})
        assert r.status_code in (401, 403), (path, r.status_code)
    assert anonymous.get("/healthz").json() == {"status": "ok"}  # the probe alone is public

    client = signed_in(base, "adm")  # the most powerful role: still refused without the token
    for path in FORMS:
        for data in ({}, {"csrf_token": "forged"}):
            r = client.post(
                path.format(**ids), data={**data, "alert_id": "1", "other": "1", "action": "comment"}
            )
            assert r.status_code == 403, (path, data, r.status_code)
    # Sign-in itself: without the double-submit token the form is refused, even with the password.
    fresh = httpx.Client(base_url=base, follow_redirects=False, timeout=30)
    r = fresh.post("/login", data={"username": "ana", "password": PASSWORD})
    assert r.status_code == 403 and SESSION_COOKIE not in r.cookies


def test_the_session_cookie_is_httponly_and_samesite(console: tuple[str, Seeded, PostgresSettings]) -> None:
    import httpx

    base, _, pg = console
    client = httpx.Client(base_url=base, follow_redirects=False, timeout=30)
    client.get("/login")
    r = client.post(
        "/login",
        data={"username": "lee", "password": PASSWORD, "csrf_token": client.cookies[LOGIN_CSRF_COOKIE]},
    )
    cookie = next(v for k, v in r.headers.multi_items() if k == "set-cookie" and v.startswith(SESSION_COOKIE))
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Max-Age=28800" in cookie
    token = r.cookies[SESSION_COOKIE]
    # Stored as a digest only; expired sessions are refused.
    assert not owner_rows(pg, "SELECT 1 FROM console_sessions WHERE token_sha256 = %s", token)
    conn = connect(pg, migration=True)
    with conn, conn.cursor() as cur:
        cur.execute("UPDATE console_sessions SET expires_at = now() - interval '1 second'")
    conn.close()
    assert client.get("/alerts").status_code == 303


def test_lockout_after_repeated_failures(console: tuple[str, Seeded, PostgresSettings]) -> None:
    import httpx

    base, _, pg = console
    client = httpx.Client(base_url=base, follow_redirects=False, timeout=30)

    def attempt(password: str) -> str:
        client.get("/login")
        r = client.post(
            "/login",
            data={"username": "ana", "password": password, "csrf_token": client.cookies[LOGIN_CSRF_COOKIE]},
        )
        assert r.status_code == 303
        return str(r.headers["location"])

    for _ in range(Settings().console.lockout_attempts):
        assert attempt("wrong password!!").startswith("/login")
    assert "locked" in attempt(PASSWORD)  # the right password no longer helps
    assert owner_rows(
        pg, "SELECT locked_until IS NOT NULL AS locked FROM console_users WHERE username = 'ana'"
    ) == [{"locked": True}]


def test_roles_limit_what_each_user_may_do(console: tuple[str, Seeded, PostgresSettings]) -> None:
    base, seeded, _ = console
    viewer = signed_in(base, "vic")
    assert viewer.get("/alerts").status_code == 200
    r = viewer.post(f"/alerts/{seeded.alert_ids[0]}/attach", data={"csrf_token": csrf_of(viewer)})
    assert r.status_code == 403
    analyst = signed_in(base, "ana")
    token = csrf_of(analyst)
    for path, data in (
        ("/rules/publish", {"candidate": "rules: {}", "reason": "x"}),
        ("/rules/backtest", {"candidate": "rules: {}"}),
        ("/dlq/1/replay", {"payload": "{}"}),
    ):
        r = analyst.post(path, data={**data, "csrf_token": token})
        assert r.status_code == 403 and "may not" in r.text, path
    lead = signed_in(base, "lee")
    r = lead.post(
        "/rules/publish", data={"candidate": "rules: {}", "reason": "x", "csrf_token": csrf_of(lead)}
    )
    assert r.status_code == 403
    r = lead.post("/dlq/1/replay", data={"payload": "{}", "csrf_token": csrf_of(lead)})
    assert r.status_code == 403


def test_hostile_text_is_shown_escaped_on_every_page(console: tuple[str, Seeded, PostgresSettings]) -> None:
    base, seeded, _ = console
    case = _case_for(base, seeded.hostile_alert_id)
    client = signed_in(base, "lee")
    token = csrf_of(client)
    client.post(
        f"/cases/{case}/act", data={"action": "comment", "text": HOSTILE["merchant"], "csrf_token": token}
    )
    hostile_account = seeded.accounts[-1]
    for path in (
        "/alerts",
        f"/alerts?account={hostile_account}",
        f"/alerts/{seeded.hostile_alert_id}",
        f"/cases/{case}",
        f"/cases/{case}/export",
        f"/accounts/{hostile_account}",
        "/cases",
    ):
        html = client.get(path).text
        assert "<script>window.__pwned" not in html and "<img src=x" not in html, path
        assert "\u202e" not in html, path  # the override is shown as its code point, never applied
    page = client.get(f"/alerts/{seeded.hostile_alert_id}").text
    assert "&lt;img src=x onerror=" in page and "DROP TABLE alerts" in page
    assert "Paris[U+202E]evil[U+202C]" in page
    exported = client.get(f"/cases/{case}/export.json")
    assert exported.json()["transactions"][0]["merchant"] == HOSTILE["merchant"]  # JSON keeps it, as data
    assert "\u202e" not in exported.text  # escaped as \u202e in the file
    assert owner_rows(console[2], "SELECT count(*) AS n FROM alerts")[0]["n"] == len(seeded.alert_ids)


def test_parallel_attaches_yield_one_open_case(console: tuple[str, Seeded, PostgresSettings]) -> None:
    base, seeded, pg = console
    account = seeded.accounts[0]
    alerts = [
        r["alert_id"] for r in owner_rows(pg, "SELECT alert_id FROM alerts WHERE account_id = %s", account)
    ]
    assert len(alerts) >= 3
    clients = [signed_in(base, name) for name in ("ana", "lee", "lou", "adm")]
    jobs = [(c, csrf_of(c), a) for a in alerts for c in clients]
    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
        codes = list(
            pool.map(
                lambda j: j[0].post(f"/alerts/{j[2]}/attach", data={"csrf_token": j[1]}).status_code, jobs
            )
        )
    assert codes == [303] * len(jobs)
    cases = owner_rows(pg, "SELECT case_id FROM cases WHERE account_id = %s AND status <> 'closed'", account)
    assert len(cases) == 1
    attached = owner_rows(
        pg, "SELECT alert_id FROM case_alerts WHERE case_id = %s ORDER BY 1", cases[0]["case_id"]
    )
    assert [r["alert_id"] for r in attached] == sorted(alerts)
    events = owner_rows(pg, "SELECT kind FROM case_events WHERE case_id = %s", cases[0]["case_id"])
    assert sorted(e["kind"] for e in events) == ["alert_attached"] * len(alerts) + ["created"]


def test_the_console_role_reads_the_pipeline_and_cannot_rewrite_history(
    console: tuple[str, Seeded, PostgresSettings],
) -> None:
    base, seeded, pg = console
    case = _case_for(base, seeded.alert_ids[0])
    conn = connect(pg.as_console())
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM alerts")
            assert cur.fetchone()[0] == len(seeded.alert_ids)
            for statement in (
                "UPDATE case_events SET reason = 'rewritten'",
                "DELETE FROM case_events",
                "DELETE FROM alerts",
                "UPDATE transactions SET amount = 1",
                "INSERT INTO rule_set_activations (version, activated_at, reason) VALUES (1, now(), 'x')",
            ):
                with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                    cur.execute(statement)
    finally:
        conn.close()
    # Not even the owner changes a case's history: the trigger refuses.
    owner = connect(pg, migration=True)
    try:
        with owner.cursor() as cur, pytest.raises(psycopg2.errors.RestrictViolation):
            cur.execute("UPDATE case_events SET reason = 'rewritten' WHERE case_id = %s", (case,))
    finally:
        owner.close()


def test_keyset_pages_walk_the_whole_queue_once(console: tuple[str, Seeded, PostgresSettings]) -> None:
    base, seeded, _ = console
    from console import queue

    client = signed_in(base, "ana")
    seen: list[int] = []
    url = "/alerts"
    original = queue.PAGE_SIZE
    queue.PAGE_SIZE = 2  # the app reads it per request: small pages, several of them
    try:
        while url:
            html = client.get(url).text
            seen += [int(x) for x in re.findall(r'href="/alerts/(\d+)"', html)]
            nxt = re.search(r'href="([^"]+)" rel="next"', html)
            url = nxt.group(1).replace("&amp;", "&") if nxt else ""
    finally:
        queue.PAGE_SIZE = original
    assert seen == sorted(seeded.alert_ids, reverse=True)


def test_filters_by_case_status_and_assignee_follow_the_case(
    console: tuple[str, Seeded, PostgresSettings],
) -> None:
    base, seeded, pg = console
    account = seeded.accounts[0]
    case = _case_for(base, seeded.alert_ids[0])
    client = signed_in(base, "ana")
    token = csrf_of(client)
    alerts = [
        r["alert_id"] for r in owner_rows(pg, "SELECT alert_id FROM alerts WHERE account_id = %s", account)
    ]
    for alert_id in alerts:
        client.post(f"/alerts/{alert_id}/attach", data={"csrf_token": token})

    def listed(query: str) -> list[int]:
        return [int(x) for x in re.findall(r'href="/alerts/(\d+)"', client.get(f"/alerts?{query}").text)]

    assert listed("status=open") == sorted(alerts, reverse=True)
    assert listed("assignee=ana") == []
    client.post(f"/cases/{case}/act", data={"action": "claim", "csrf_token": token})
    assert listed("status=open") == []
    assert listed("status=investigating&assignee=ana") == sorted(alerts, reverse=True)
    assert listed("status=new") == sorted(set(seeded.alert_ids) - set(alerts), reverse=True)
    page = client.get("/alerts?assignee=ana").text
    assert f"investigating <b>{len(alerts)}</b>" in page  # the facet counts follow too


def test_add_user_reads_the_password_from_stdin(fresh_db: PostgresSettings) -> None:
    import os
    import subprocess
    import sys

    import httpx

    from utils.config import settings_to_env

    settings = dataclasses.replace(Settings(), postgres=fresh_db)
    env = {**os.environ, **settings_to_env(settings), "TXMON_ENV_FILE": "/nonexistent"}

    def add(name: str, role: str, password: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "console", "add-user", name, "--role", role],
            input=password + "\n",
            env=env,
            capture_output=True,
            text=True,
        )

    assert add("maria", "lead", "too short").returncode == 1
    done = add("maria", "lead", "a long enough passphrase")
    assert done.returncode == 0 and "maria (lead)" in done.stdout, done.stderr
    rows = owner_rows(fresh_db, "SELECT role, password_hash FROM console_users WHERE username = 'maria'")
    assert rows[0]["role"] == "lead" and rows[0]["password_hash"].startswith("$argon2id$")
    assert "passphrase" not in done.stdout + done.stderr
    with serve(settings) as base:
        client = httpx.Client(base_url=base, follow_redirects=False, timeout=30)
        client.get("/login")
        r = client.post(
            "/login",
            data={
                "username": "maria",
                "password": "a long enough passphrase",
                "csrf_token": client.cookies[LOGIN_CSRF_COOKIE],
            },
        )
        assert r.status_code == 303 and r.headers["location"] == "/alerts"
