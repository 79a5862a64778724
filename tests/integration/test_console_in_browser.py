"""An analyst's and two leads' day in the console, in headless Chromium: sign in, filter the
queue, open an alert, open its case, attach a second alert, ask for closure, be refused closing
one's own case as confirmed fraud, have another lead close it, read the history, export it.
Full-page screenshots of every page are left in tests/artifacts/console/."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import pytest

from consumer.rules import RULES
from tests.browser import artifact, chromium
from tests.console_support import HOSTILE, PASSWORD, Seeded, owner_rows, seed, serve
from utils.config import PostgresSettings, Settings
from utils.database import connect


@pytest.fixture
def console(fresh_db: PostgresSettings) -> Iterator[tuple[str, Seeded, PostgresSettings]]:
    seeded = seed(fresh_db, accounts=4, per_account=8)
    conn = connect(fresh_db, migration=True)
    with conn, conn.cursor() as cur:  # one rejected message for the DLQ page
        cur.execute(
            """INSERT INTO rejected_transactions (kafka_topic, kafka_partition, kafka_offset, reason, detail,
                   transaction_id, message_key, raw_payload)
               VALUES ('transactions', 2, 41, 'invalid_amount', 'amount: must be greater than 0', 'tx-bad',
                       'ACC-0001', %s)""",
            (
                json.dumps(
                    {"transaction_id": "tx-bad", "amount": -5, "merchant": HOSTILE["merchant"]}
                ).encode(),
            ),
        )
    conn.close()
    settings = dataclasses.replace(Settings(), postgres=fresh_db)
    with serve(settings) as base:
        yield base, seeded, fresh_db


def shot(tab: Any, name: str) -> None:
    path = artifact(f"console/{name}.png")
    path.parent.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(path), full_page=True)


def sign_in(tab: Any, base: str, username: str) -> None:
    tab.goto(f"{base}/login")
    tab.fill("input[name=username]", username)
    tab.fill("input[name=password]", PASSWORD)
    tab.click("button[type=submit]")
    tab.wait_for_url(f"{base}/alerts")


def test_an_alert_becomes_a_case_closed_under_four_eyes(
    console: tuple[str, Seeded, PostgresSettings],
) -> None:
    base, seeded, pg = console
    account = seeded.accounts[1]
    with chromium() as browser:
        tab = browser.new_page(viewport={"width": 1360, "height": 900})
        errors: list[str] = []
        tab.on("pageerror", lambda exc: errors.append(str(exc)))
        dialogs: list[str] = []

        def dialog(d: Any) -> None:  # an alert() from injected script would land here
            dialogs.append(d.message)
            d.dismiss()

        tab.on("dialog", dialog)

        tab.goto(f"{base}/alerts")
        assert tab.url.startswith(f"{base}/login")  # anonymous: sent to sign in
        shot(tab, "01-login")
        sign_in(tab, base, "lee")
        rows = tab.locator("table.grid tbody tr")
        assert rows.count() == len(seeded.alert_ids)
        shot(tab, "02-queue")

        # Filter: one account, high severity.
        tab.fill("input[name=account]", account)
        tab.select_option("select[name=severity]", "high")
        tab.click("form.filters button[type=submit]")
        tab.wait_for_url("**severity=high**")
        expected = owner_rows(
            pg,
            "SELECT alert_id FROM alerts WHERE account_id = %s AND severity = 'high' ORDER BY alert_id DESC",
            account,
        )
        links = tab.locator("table.grid tbody td:first-child a")
        assert [int(t.lstrip("#")) for t in links.all_inner_texts()] == [r["alert_id"] for r in expected]
        assert f"{len(expected)} matching" in tab.inner_text("h1")
        shot(tab, "03-queue-filtered")

        # Open the alert: the numbers that fired it and the account's transactions around it.
        first = expected[0]["alert_id"]
        links.first.click()
        tab.wait_for_url(f"{base}/alerts/{first}")
        assert "Why it fired" in tab.inner_text("main") and "threshold\t500" in tab.inner_text("main")
        assert tab.locator("tr.this").count() == 1
        shot(tab, "04-alert")

        # Attach it: the account's case opens.
        tab.click("text=Attach to the account's open case")
        tab.wait_for_url("**/cases/*")
        case_url = tab.url.split("?")[0]
        case_id = int(case_url.rsplit("/", 1)[1])
        assert "open" in tab.inner_text("h1")
        # Attach a second alert of the account from the case page.
        tab.click("form[action$='/attach'] button")
        tab.wait_for_load_state()
        assert tab.locator("h2", has_text="Alerts in this case (2)").count() == 1
        shot(tab, "05-case-open")

        # Take it and ask for closure as confirmed fraud.
        tab.click("form.act:has(input[value=claim]) button")
        tab.wait_for_load_state()
        form = tab.locator("form.act:has(input[value=request_closure])")
        form.locator("select[name=outcome]").select_option("confirmed_fraud")
        form.locator("input[name=reason]").fill("card used in two countries within minutes; customer denies")
        form.locator("button").click()
        tab.wait_for_load_state()
        assert "pending approval" in tab.inner_text("h1")

        # The same lead may not close it as confirmed fraud.
        close = tab.locator("form.act:has(input[value=close])")
        close.locator("select[name=outcome]").select_option("confirmed_fraud")
        close.locator("button").click()
        tab.wait_for_load_state()
        flash = tab.inner_text(".flash")
        assert "four-eyes" in flash and "refused" in flash
        assert "pending approval" in tab.inner_text("h1")
        shot(tab, "06-case-refused-four-eyes")

        # Another lead closes it.
        tab.click("header form.who button")
        tab.wait_for_url(f"{base}/login")
        sign_in(tab, base, "lou")
        tab.goto(case_url)
        close = tab.locator("form.act:has(input[value=close])")
        close.locator("select[name=outcome]").select_option("confirmed_fraud")
        close.locator("input[name=reason]").fill("agreed: report filed")
        close.locator("button").click()
        tab.wait_for_load_state()
        assert "closed" in tab.inner_text("h1")

        # The history: every step, who, from -> to, why.
        history = tab.locator("table.history tbody tr").all_inner_texts()
        kinds = [row.split("\t")[2] for row in history]
        assert kinds == ["created", "alert attached", "alert attached", "assigned", "status", "status"], (
            history
        )
        assert "lou" in history[-1] and "pending approval\tclosed" in history[-1]
        assert "lee" in history[-2] and "card used in two countries" in history[-2]
        shot(tab, "07-case-closed-history")

        # Export: a printable page and JSON.
        tab.click("text=Printable report")
        tab.wait_for_url(f"{case_url}/export")
        text = tab.inner_text("main")
        assert "Timeline of decisions" in text and "confirmed fraud" in text and "threshold" in text
        shot(tab, "08-case-export")
        exported = tab.request.get(f"{case_url}/export.json").json()
        assert exported["case"]["outcome"] == "confirmed_fraud" and len(exported["alerts"]) == 2
        assert [e["kind"] for e in exported["timeline"]] == [
            "created",
            "alert_attached",
            "alert_attached",
            "assigned",
            "status",
            "status",
        ]

        # The other pages, for people to look at.
        tab.goto(f"{base}/cases?status=closed")
        assert tab.locator(f"a[href='/cases/{case_id}']").count() == 1
        shot(tab, "09-cases")
        tab.goto(f"{base}/accounts/{account}")
        assert tab.locator("svg.chart rect").count() == 8
        assert tab.locator("svg.chart rect[fill='#cc3311']").count() == 4  # the alerted ones
        shot(tab, "10-account")
        tab.goto(f"{base}/alerts/{seeded.hostile_alert_id}")
        assert tab.evaluate("window.__pwned") is None  # the hostile markup did not run
        assert "Paris[U+202E]evil[U+202C]" in tab.inner_text("main")
        shot(tab, "11-hostile-alert")
        tab.goto(f"{base}/rules")
        text = tab.inner_text("main")
        assert "Candidate rule set" in text
        # The closed case's two alerts are labels now: confirmed fraud, 2 of 2.
        verdict_rows = tab.locator('h2:has-text("Analysts\' verdicts") + table tbody tr').all_inner_texts()
        assert sorted(r.split("\t")[1:] for r in verdict_rows) == [["1", "1", "100%"], ["1", "1", "100%"]]
        # A lead backtests the candidate (the active set, unchanged: nothing differs).
        tab.click("text=Backtest this candidate")
        tab.wait_for_load_state()
        assert "transactions replayed" in tab.inner_text("main"), tab.inner_text("main")[:2000]
        backtest_rows = tab.locator("th:has-text('Verdict precision')").locator(
            "xpath=ancestor::table//tbody/tr"
        )
        assert backtest_rows.count() == len(
            RULES
        )  # every rule, with its verdict precision beside the simulator's
        shot(tab, "12-rules")
        tab.goto(f"{base}/dlq")
        assert "invalid amount" in tab.inner_text("main")
        assert tab.evaluate("window.__pwned") is None
        shot(tab, "13-dlq")
        assert not errors and not dialogs
