"""The console's rule-set and dead-letter pages: what leads test and only admins change.

/rules                 the active rule set (YAML) and every version; a lead backtests a candidate
                       (consumer/rulesets/backtest_db.py) and sees the per-rule diff; an admin
                       publishes it. Publishing writes rule_set_versions, which the console's own
                       role may not: it runs as the owner role, as `python -m consumer.rulesets
                       publish` does, and only where the console is given that role's password.
/dlq                   rejected messages by reason, the raw payload shown as escaped text; an
                       admin replays a corrected one (consumer/dlq_replay.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, Response

from console import store
from consumer import dlq_replay
from consumer.rulesets import backtest_db, document
from consumer.rulesets import store as rulesets
from consumer.rulesets.model import RuleSet
from utils import verdicts
from utils.config import Settings
from utils.database import Database, connect
from utils.errors import TxmonError

Tx = Callable[[], AbstractContextManager[store.Cursor]]


def register(
    app: FastAPI,
    settings: Settings,
    db: Database,
    tx: Tx,
    session: Callable[[Request, store.Cursor], store.Session],
    form_session: Callable[..., store.Session],
    page: Callable[..., HTMLResponse],
    done: Callable[..., Response],
) -> None:
    from console.app import Refused

    console_settings = dataclasses.replace(settings, postgres=db.settings)

    def rules_context(cur: store.Cursor) -> dict[str, Any]:
        active = rulesets.active(cur, settings.rules)
        return {
            "active_yaml": document.dump(active or RuleSet.from_thresholds(settings.rules)),
            "active_version": active.version if active else None,
            "versions": rulesets.versions(cur),
            "activations": rulesets.activations(cur)[:20],
            "verdicts": verdicts.load(cur),
        }

    @app.get("/rules", response_class=HTMLResponse)
    def rules(request: Request) -> Response:
        with tx() as cur:
            s = session(request, cur)
            context = rules_context(cur)
        return page(request, "rules.html", s, candidate=context["active_yaml"], **context)

    @app.post("/rules/backtest", response_class=HTMLResponse)
    def backtest(request: Request, candidate: str = Form(""), csrf_token: str = Form("")) -> Response:
        with tx() as cur:
            s = form_session(request, cur, csrf_token, "backtest")
            context = rules_context(cur)
        problems, outcome = _candidate_problems(candidate, settings), None
        if not problems:
            rule_set = document.load(candidate, settings.rules)
            run = backtest_db.run_backtest(
                console_settings, backtest_db.Scope(settings.kafka.topic), rule_set
            )
            outcome = run.outcome
        return page(
            request, "rules.html", s, candidate=candidate, problems=problems, outcome=outcome, **context
        )

    @app.post("/rules/publish")
    def publish(
        request: Request,
        candidate: str = Form(""),
        reason: str = Form(""),
        db_user: str = Form(""),
        db_password: str = Form(""),
        csrf_token: str = Form(""),
    ) -> Response:
        with tx() as cur:
            s = form_session(request, cur, csrf_token, "publish_rules")
        problems = _candidate_problems(candidate, settings)
        if problems:
            raise Refused(400, "the candidate is not valid: " + "; ".join(problems))
        if not reason.strip():
            raise Refused(400, "publishing needs a reason, kept with the version for good")
        if not db_user.strip() or not db_password:
            # The database records who published (session_user, migration 071): a person's own
            # login in txmon_rules_admin, never the console's role or the owner.
            raise Refused(
                400,
                "publishing needs your own database login, a member of txmon_rules_admin "
                "(`python -m utils.roles add-rules-admin NAME`): the database records it as the publisher",
            )
        rule_set = document.load(candidate, settings.rules)
        login = dataclasses.replace(settings.postgres, user=db_user.strip(), password=db_password)
        with contextlib.closing(connect(login)) as conn, conn, conn.cursor() as cur:
            result = rulesets.publish(
                cur,
                rule_set,
                reason=f"{reason.strip()} (console user {s.username})",
                environment=RuleSet.from_thresholds(settings.rules),
            )
        return done(
            "/rules", f"version {result.version} is active" if result.created else "identical: nothing new"
        )

    @app.get("/dlq", response_class=HTMLResponse)
    def dlq(request: Request, reason: str = "") -> Response:
        with tx() as cur:
            s = session(request, cur)
            cur.execute(
                "SELECT reason, count(*) AS n FROM rejected_transactions GROUP BY reason ORDER BY n DESC, reason"
            )
            reasons = cur.fetchall()
            cur.execute(
                """SELECT rejected_id, kafka_topic, kafka_partition, kafka_offset, reason, detail, transaction_id,
                          message_key, raw_payload, rejected_at FROM rejected_transactions
                   WHERE (%(r)s = '' OR reason = %(r)s) ORDER BY rejected_id DESC LIMIT 100""",
                {"r": reason[:100]},
            )
            rows = [dict(r, payload=dlq_replay.shown(bytes(r["raw_payload"]))) for r in cur.fetchall()]
        return page(
            request,
            "dlq.html",
            s,
            reasons=reasons,
            rows=rows,
            reason=reason,
            msg=request.query_params.get("msg", ""),
        )

    @app.post("/dlq/{rejected_id}/replay")
    def replay(
        request: Request, rejected_id: int, payload: str = Form(""), csrf_token: str = Form("")
    ) -> Response:
        with tx() as cur:
            s = form_session(request, cur, csrf_token, "replay_dlq")
        try:
            with contextlib.closing(connect(db.settings)) as conn:
                result = dlq_replay.replay(conn, settings.kafka, rejected_id, payload.encode(), by=s.username)
        except TxmonError as exc:
            return done("/dlq", f"refused: {exc}")
        return done("/dlq", result)


def _candidate_problems(text: str, settings: Settings) -> list[str]:
    try:
        document.load(text, settings.rules)
    except document.RuleSetInvalid as exc:
        return [str(p) for p in exc.problems] if hasattr(exc, "problems") else [str(exc)]
    return []
