"""The console under test: a fresh database with alerts in it, users of every role, and the app
served by uvicorn on a loopback port in a thread of the test process (stopped at the end).

Rows go straight into PostgreSQL as the owner role: the console reads what the pipeline stored,
and these tests are about the console, not about how the rows got there (the pipeline's own tests
cover that). Some rows carry hostile text, as a hostile client could send it.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg2.extras

from console import store
from console.app import LOGIN_CSRF_COOKIE, console_database, create_app
from utils.config import PostgresSettings, Settings
from utils.database import Database, connect

PASSWORD = "correct horse battery staple"
USERS = {"ana": "analyst", "lee": "lead", "lou": "lead", "adm": "admin", "vic": "viewer"}
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
HOSTILE = {
    "merchant": "<script>window.__pwned = 1</script>Evil & Co",
    "city": "Paris\u202eevil\u202c",
    "message": '<img src=x onerror="window.__pwned=1"> \'; DROP TABLE alerts; --',
}


@dataclass(frozen=True)
class Seeded:
    accounts: list[str]
    alert_ids: list[int]  # newest last
    hostile_alert_id: int


def seed(pg: PostgresSettings, accounts: int = 3, per_account: int = 6) -> Seeded:
    """Transactions for `accounts` accounts, every other one alerted; one account's rows hostile."""
    conn = connect(pg, migration=True)
    names = [f"ACC-{i:04d}" for i in range(accounts)]
    rules = ["high_amount", "velocity", "amount_spike"]
    severities = ["high", "medium", "critical"]
    alert_ids: list[int] = []
    try:
        with conn, conn.cursor() as cur:
            n = 0
            for a, account in enumerate(names):
                hostile = a == accounts - 1
                for i in range(per_account):
                    n += 1
                    tid = f"tx-{a}-{i}"
                    at = START + timedelta(minutes=10 * n)
                    amount = 100 + 250 * i + a
                    merchant = HOSTILE["merchant"] if hostile else f"Shop {i % 2}"
                    cur.execute(
                        """INSERT INTO transactions (transaction_id, account_id, transaction_type, amount, currency,
                               "timestamp", channel, country, merchant, city, schema_version, kafka_topic,
                               kafka_partition, kafka_offset)
                           VALUES (%s, %s, 'purchase', %s, 'USD', %s, 'online', 'FR', %s, %s, 1, 'transactions', 0, %s)""",
                        (
                            tid,
                            account,
                            amount,
                            at,
                            merchant,
                            HOSTILE["city"] if hostile else "Lyon",
                            n,
                        ),
                    )
                    if i % 2 == 1:
                        rule = rules[(i // 2) % len(rules)]
                        cur.execute(
                            """INSERT INTO alerts (transaction_id, account_id, alert_type, severity, alert_message,
                                   details, created_at, merchant, amount)
                               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING alert_id""",
                            (
                                tid,
                                account,
                                rule,
                                severities[(i // 2) % len(severities)],
                                HOSTILE["message"] if hostile else f"{rule} fired on {tid}",
                                json.dumps(
                                    {"amount": 100 + 250 * i, "threshold": 500, "note": HOSTILE["city"]}
                                    if hostile
                                    else {"amount": 100 + 250 * i, "threshold": 500}
                                ),
                                at + timedelta(seconds=5),
                                merchant,  # the alert's copies of its transaction's (the consumer's)
                                amount,
                            ),
                        )
                        alert_ids.append(cur.fetchone()[0])
            cur.execute("SELECT max(alert_id) FROM alerts WHERE account_id = %s", (names[-1],))
            hostile_alert = cur.fetchone()[0]
    finally:
        conn.close()
    return Seeded(names, alert_ids, hostile_alert)


def add_users(db: Database) -> None:
    with db.connection() as conn, store.new_cursor(conn) as cur:
        for name, role in USERS.items():
            store.add_user(cur, name, role, PASSWORD)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve(settings: Settings) -> Iterator[str]:
    """The console on a free loopback port; its base URL."""
    import uvicorn

    db = console_database(settings)
    add_users(db)
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, db), host="127.0.0.1", port=port, log_level="warning", lifespan="off"
        )
    )
    thread = threading.Thread(target=server.run, name="console", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the console did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        db.close()


def signed_in(base: str, username: str) -> httpx.Client:
    """An HTTP client with a session of `username`."""
    client = httpx.Client(base_url=base, follow_redirects=False, timeout=30)
    form = client.get("/login")
    token = form.cookies.get(LOGIN_CSRF_COOKIE) or client.cookies.get(LOGIN_CSRF_COOKIE)
    r = client.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": token})
    assert r.status_code == 303 and r.headers["location"] == "/alerts", r.text
    return client


def csrf_of(client: httpx.Client, path: str = "/alerts") -> str:
    """The session's CSRF token, as a page's forms carry it."""
    html = client.get(path).text
    marker = 'name="csrf_token" value="'
    start = html.index(marker) + len(marker)
    return html[start : html.index('"', start)]


def owner_rows(pg: PostgresSettings, query: str, *params: object) -> list[dict[str, Any]]:
    conn = connect(pg, migration=True)
    try:
        with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute(query, params)
            return [dict(r) for r in cur.fetchall()]
    finally:
        conn.close()
