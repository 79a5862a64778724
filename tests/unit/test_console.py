"""The console's pure parts: the case state machine and who may do what, sign-in lockout, the
queue's filters and cursors, the chart, and the DLQ replay's checks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from psycopg2 import sql

from console import auth, chart, queue, workflow
from console.app import _local, _reveal
from console.workflow import Case, Change, Refusal, Request, User
from consumer import dlq_replay

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
ANA, LEE, LOU = User("ana", "analyst"), User("lee", "lead"), User("lou", "lead")
VIC, ADM = User("vic", "viewer"), User("adm", "admin")


def case(
    status: str = "open",
    assignee: str | None = None,
    investigator: str | None = None,
    outcome: str | None = None,
) -> Case:
    return Case(1, "ACC-1", status, "high", assignee, investigator, outcome, T0)


def test_the_happy_path_open_investigating_pending_closed() -> None:
    c = case()
    took = workflow.decide(ANA, c, Request("claim"))
    assert isinstance(took, Change) and took.updates == {"assignee": "ana", "status": "investigating"}
    c = case("investigating", "ana")
    asked = workflow.decide(
        ANA, c, Request("request_closure", outcome="confirmed_fraud", reason="stolen card")
    )
    assert isinstance(asked, Change)
    assert asked.updates == {
        "status": "pending_approval",
        "outcome": "confirmed_fraud",
        "investigator": "ana",
    }
    assert (asked.from_value, asked.to_value, asked.reason) == (
        "investigating",
        "pending_approval",
        "stolen card",
    )
    c = case("pending_approval", "ana", "ana", "confirmed_fraud")
    closed = workflow.decide(LEE, c, Request("close"))
    assert (
        isinstance(closed, Change)
        and closed.updates["status"] == "closed"
        and closed.updates["outcome"] == "confirmed_fraud"
    )


def test_four_eyes_the_investigator_never_closes_confirmed_fraud() -> None:
    c = case("pending_approval", "lee", "lee", "confirmed_fraud")
    refused = workflow.decide(LEE, c, Request("close"))
    assert isinstance(refused, Refusal) and "four-eyes" in refused.reason
    # ... nor the assignee when somebody else asked for closure
    c2 = case("pending_approval", "lee", "ana", "confirmed_fraud")
    assert isinstance(workflow.decide(LEE, c2, Request("close")), Refusal)
    assert isinstance(workflow.decide(LOU, c, Request("close")), Change)
    # A benign outcome is not a fraud decision: the investigating lead may close it.
    assert isinstance(workflow.decide(LEE, c, Request("close", outcome="benign")), Change)


@pytest.mark.parametrize(
    ("user", "action", "allowed"),
    [
        (VIC, "comment", False),
        (VIC, "attach", False),
        (ANA, "attach", True),
        (ANA, "close", False),
        (ANA, "reopen", False),
        (ANA, "backtest", False),
        (ANA, "publish_rules", False),
        (ANA, "replay_dlq", False),
        (LEE, "backtest", True),
        (LEE, "publish_rules", False),
        (LEE, "replay_dlq", False),
        (ADM, "publish_rules", True),
        (ADM, "replay_dlq", True),
    ],
)
def test_what_each_role_may_do(user: User, action: str, allowed: bool) -> None:
    assert workflow.may(user.role, action) is allowed


def test_reassigning_needs_a_reason_and_a_lead() -> None:
    c = case("investigating", "ana")
    assert isinstance(workflow.decide(User("bob", "analyst"), c, Request("claim")), Refusal)  # no reason
    ok = workflow.decide(User("bob", "analyst"), c, Request("claim", reason="ana is away"))
    assert isinstance(ok, Change) and (ok.from_value, ok.to_value, ok.reason) == ("ana", "bob", "ana is away")
    refused = workflow.decide(ANA, case(), Request("assign", assignee="bob"))
    assert isinstance(refused, Refusal) and "lead" in refused.reason
    assert isinstance(workflow.decide(LEE, case(), Request("assign", assignee="bob")), Change)


def test_closed_cases_are_locked_and_only_a_lead_reopens_with_a_reason() -> None:
    c = case("closed", "ana", "ana", "benign")
    for action in ("claim", "attach", "request_closure", "close"):
        assert isinstance(workflow.decide(LEE, c, Request(action, outcome="benign", reason="x")), Refusal), (
            action
        )
    assert isinstance(workflow.decide(ANA, c, Request("reopen", reason="new evidence")), Refusal)
    assert isinstance(workflow.decide(LEE, c, Request("reopen")), Refusal)
    reopened = workflow.decide(LEE, c, Request("reopen", reason="chargeback arrived"))
    assert isinstance(reopened, Change) and reopened.updates["status"] == "investigating"
    assert reopened.detail == {"previous_outcome": "benign"}
    assert isinstance(
        workflow.decide(ANA, c, Request("comment", text="noted")), Change
    )  # the file stays open to notes


def test_closure_needs_an_outcome_and_a_reason_and_the_right_state() -> None:
    c = case("investigating", "ana")
    assert isinstance(workflow.decide(ANA, c, Request("request_closure", reason="x")), Refusal)
    assert isinstance(workflow.decide(ANA, c, Request("request_closure", outcome="benign")), Refusal)
    assert isinstance(workflow.decide(LEE, c, Request("close", outcome="benign")), Refusal)  # not asked for
    back = workflow.decide(
        LEE, case("pending_approval", "ana", "ana", "benign"), Request("reject_closure", reason="check IP")
    )
    assert isinstance(back, Change) and back.updates == {"status": "investigating", "outcome": None}


def test_sla_due_time_and_worst_severity() -> None:
    hours = {"low": 168.0, "medium": 72.0, "high": 24.0, "critical": 4.0}
    assert workflow.due_at(T0, "critical", hours) == T0 + timedelta(hours=4)
    assert workflow.worst("medium", "critical") == "critical" and workflow.worst("high", "low") == "high"


def test_lockout_counts_failures_and_locks_even_the_right_password() -> None:
    lock = timedelta(minutes=15)
    state = auth.attempt(
        password_ok=False, failed_attempts=0, locked_until=None, now=T0, max_attempts=3, lock_for=lock
    )
    assert (state.allowed, state.failed_attempts, state.locked_until) == (False, 1, None)
    state = auth.attempt(
        password_ok=False, failed_attempts=2, locked_until=None, now=T0, max_attempts=3, lock_for=lock
    )
    assert state.locked_until == T0 + lock and "locked" in state.message
    during = auth.attempt(
        password_ok=True,
        failed_attempts=0,
        locked_until=T0 + lock,
        now=T0 + timedelta(minutes=5),
        max_attempts=3,
        lock_for=lock,
    )
    assert not during.allowed
    after = auth.attempt(
        password_ok=True,
        failed_attempts=0,
        locked_until=T0 + lock,
        now=T0 + lock,
        max_attempts=3,
        lock_for=lock,
    )
    assert (after.allowed, after.failed_attempts, after.locked_until) == (True, 0, None)


def test_passwords_are_argon2_hashes_and_tokens_are_stored_as_digests() -> None:
    h = auth.hash_password("a long enough password")
    assert h.startswith("$argon2id$") and auth.verify_password(h, "a long enough password")
    assert not auth.verify_password(h, "a long enough passworD") and not auth.verify_password(None, "x")
    with pytest.raises(ValueError, match="12 characters"):
        auth.hash_password("short")
    token = auth.new_token()
    assert auth.token_digest(token) != token and len(auth.token_digest(token)) == 64


def test_filters_parse_and_refuse_what_they_cannot_use() -> None:
    f = queue.parse_filters(
        {"rule": " velocity ", "min_amount": "10.5", "since": "2026-03-01", "status": "new"}
    )
    assert (f.rule, f.min_amount, f.since, f.status) == (
        "velocity",
        Decimal("10.5"),
        T0.date().replace(day=1),
        "new",
    )
    assert f.query() == {"rule": "velocity", "min_amount": "10.5", "since": "2026-03-01", "status": "new"}
    for bad in (
        {"severity": "urgent"},
        {"min_amount": "ten"},
        {"min_amount": "-1"},
        {"until": "03/02/2026"},
        {"status": "x"},
    ):
        with pytest.raises(queue.BadFilter):
            queue.parse_filters(bad)


def test_cursors_round_trip_and_forged_ones_are_refused() -> None:
    cursor = queue.encode_cursor(T0, 42)
    assert queue.decode_cursor(cursor) == (T0, 42)
    assert queue.decode_cursor("") is None
    for forged in ("!!!", "bm90IGEgY3Vyc29y"):
        with pytest.raises(queue.BadFilter):
            queue.decode_cursor(forged)


def _text(q: sql.Composable) -> str:
    def walk(x: sql.Composable) -> str:
        if isinstance(x, sql.Composed):
            return "".join(walk(p) for p in x.seq)
        assert isinstance(x, sql.SQL)
        return x.string

    return walk(q)


def test_pages_are_keyset_and_values_are_parameters() -> None:
    f = queue.Filters(merchant="x'; DROP TABLE alerts; --", status="new", min_amount=Decimal(5))
    query, params = queue.page_query(f, (T0, 9), size=50)
    text = _text(query)
    assert "OFFSET" not in text and "(a.created_at, a.alert_id) < (%s, %s)" in text
    assert "ORDER BY a.created_at DESC, a.alert_id DESC LIMIT %s" in text
    assert "DROP" not in text and params == ["x'; DROP TABLE alerts; --", Decimal(5), T0, 9, 51]
    count, count_params = queue.summary_query(queue.Filters(rule="velocity"))
    assert "transactions" not in _text(count)  # only the joins needed
    assert "GROUPING SETS ((rule), (severity), (status), ())" in _text(count)
    assert count_params == ["velocity", queue.COUNT_CAP + 1]
    assert queue.capped(queue.COUNT_CAP + 1) == f"{queue.COUNT_CAP:,}+" and queue.capped(7) == "7"


def test_hostile_text_is_revealed_and_redirects_stay_on_site() -> None:
    assert _reveal("Paris\u202eevil\u202c") == "Paris[U+202E]evil[U+202C]"
    assert _reveal("plain <b>") == "plain <b>"  # escaping is the template's job, after this
    assert _local("/cases/1") == "/cases/1"
    for hostile in ("//evil.example", "https://evil.example", "/\\evil.example"):
        assert _local(hostile) == "/alerts"


def test_the_chart_marks_alerted_transactions_and_escapes_text() -> None:
    rows = [
        {"timestamp": T0, "amount": Decimal("10"), "currency": "USD", "alert_types": []},
        {
            "timestamp": T0 + timedelta(hours=1),
            "amount": Decimal("990"),
            "currency": "<b>",
            "alert_types": ["high_amount"],
        },
    ]
    svg = chart.amounts_svg(rows)
    assert svg.count("<rect") == 2 and svg.count(chart.RED) == 1 and "&lt;b&gt;" in svg and "<b>" not in svg
    assert "No transactions" in chart.amounts_svg([])


def test_a_replay_needs_json_with_a_transaction_id_and_names_the_rejected_offset() -> None:
    assert dlq_replay.transaction_id_of(b'{"transaction_id": "t-1"}') == "t-1"
    for bad in (b"not json", b"[1]", b'{"transaction_id": ""}', b"\xff"):
        with pytest.raises(dlq_replay.ReplayRefused):
            dlq_replay.transaction_id_of(bad)
    r = dlq_replay.Rejected(7, "transactions", 2, 41, b"ACC-1", b"{}")
    assert dlq_replay.headers(r, "adm") == [
        ("txmon-replay-of", b"transactions/2/41"),
        ("txmon-replayed-by", b"adm"),
    ]
    assert dlq_replay.shown(b"ok \xff") == "ok \\xff"


def test_a_case_filter_walks_case_alerts_in_queue_order() -> None:
    query, params = queue.page_query(queue.Filters(assignee="ana", rule="velocity"), (T0, 9))
    text = _text(query)
    assert "ca.assignee = %s" in text and "(ca.alert_created_at, ca.alert_id) < (%s, %s)" in text
    assert text.endswith("ORDER BY ca.alert_created_at DESC, ca.alert_id DESC LIMIT %s")
    assert params == ["velocity", "ana", T0, 9, queue.PAGE_SIZE + 1]
    facet, facet_params = queue.summary_query(queue.Filters(severity="high"))
    assert "coalesce(ca.status, 'new')" in _text(facet) and "LEFT JOIN case_alerts" in _text(facet)
    assert facet_params == ["high", queue.COUNT_CAP + 1]


def test_verdicts_become_each_rules_precision() -> None:
    from utils import verdicts

    found = verdicts.scores(
        [
            ("velocity", "confirmed_fraud"),
            ("velocity", "benign"),
            ("velocity", "confirmed_fraud"),
            ("duplicate", "false_positive"),
        ]
    )
    assert (found["velocity"].confirmed, found["velocity"].decided) == (2, 3)
    assert found["velocity"].precision == pytest.approx(2 / 3) and found["duplicate"].precision == 0
    lines = verdicts.format_lines(found)
    assert "67%" in lines[2] and "0%" in lines[1]
    assert "no alert in a closed case" in verdicts.format_lines({})[0]
