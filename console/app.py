"""The console's web application (FastAPI, server-rendered Jinja2 pages, plain HTML forms).

Security at the edge, in one place each:
  - `_session`: every page but /login and /healthz needs a signed-in session (server-side, expiring;
    the cookie is HttpOnly, SameSite=Lax, Secure when CONSOLE_SECURE_COOKIES);
  - `_form_session`: every form POST carries the session's CSRF token (synchronizer pattern), and the
    sign-in form a double-submit token, or it is refused with 403;
  - console/workflow.py: what each role may do; the database role adds that the console can write
    only its own tables;
  - templates autoescape, and `_reveal` makes bidirectional-override characters visible, so hostile
    text in a transaction is shown as text everywhere.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from console import auth, chart, queue, store, workflow
from console.workflow import Refusal
from console.workflow import Request as CaseRequest
from utils.config import Settings
from utils.database import Database

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
SESSION_COOKIE = "txmon_console_session"
LOGIN_CSRF_COOKIE = "txmon_console_login_csrf"
# Pages anyone may open: the sign-in form, the health probe, the stylesheet.
PUBLIC_PATHS = ("/login", "/healthz", "/static/")

# Characters that reorder or hide text (Trojan Source: bidi embeddings, overrides, isolates,
# zero-width marks): shown as their code point instead, so what a person reads is what is stored.
_INVISIBLE = re.compile("[\u061c\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufeff]")


def _reveal(value: Any) -> Any:
    """Every {{ value }} of a template passes here before autoescaping."""
    if isinstance(value, Markup) or not isinstance(value, str):
        return value
    return _INVISIBLE.sub(lambda m: f"[U+{ord(m.group()):04X}]", value)


def _templates() -> Jinja2Templates:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True),
        finalize=_reveal,
    )
    env.filters["pretty"] = lambda v: json.dumps(v, indent=2, sort_keys=True, default=str)
    env.filters["label"] = lambda v: str(v).replace("_", " ") if v else ""
    return Jinja2Templates(env=env)


def console_database(settings: Settings, maxconn: int = 8) -> Database:
    """The console's pool, as its own database role. No parallel workers: the queue's queries
    read a few thousand index entries at most, and on a small machine starting workers cost more
    than they saved (bench.console's p95 on 2 cores)."""
    return Database(
        settings.postgres.as_console(), maxconn=maxconn, session={"max_parallel_workers_per_gather": 0}
    )


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def create_app(settings: Settings, db: Database) -> FastAPI:
    cs = settings.console
    sla = cs.sla_hours()
    templates = _templates()
    app = FastAPI(title="txmon console", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    # psycopg2's pool raises when every connection is out; requests wait their turn here instead.
    turns = threading.BoundedSemaphore(db.maxconn)

    @contextmanager
    def tx() -> Iterator[store.Cursor]:
        with turns, db.connection() as conn, store.new_cursor(conn) as cur:
            yield cur

    def _session(request: Request, cur: store.Cursor) -> store.Session:
        s = store.session(cur, request.cookies.get(SESSION_COOKIE, ""))
        if s is None:
            raise Refused(401, "sign in first")
        return s

    def _form_session(
        request: Request, cur: store.Cursor, csrf_token: str, action: str | None = None
    ) -> store.Session:
        s = _session(request, cur)
        if not csrf_token or not auth.same(csrf_token, s.csrf_token):
            raise Refused(403, "the form's CSRF token is missing or stale: reload the page and try again")
        if action is not None and not workflow.may(s.role, action):
            raise Refused(403, f"a {s.role} may not {action.replace('_', ' ')}")
        return s

    def page(request: Request, name: str, s: store.Session | None, **context: Any) -> HTMLResponse:
        return templates.TemplateResponse(
            request, name, {"me": s, "csrf": s.csrf_token if s else "", "path": request.url.path, **context}
        )

    @app.exception_handler(Refused)
    def refused(request: Request, exc: Refused) -> Response:
        if exc.status == 401 and request.method == "GET" and not request.url.path.endswith(".json"):
            return RedirectResponse("/login?" + urlencode({"next": request.url.path}), status_code=303)
        if request.url.path.endswith(".json"):
            return JSONResponse({"error": exc.message}, status_code=exc.status)
        return templates.TemplateResponse(
            request, "error.html", {"me": None, "csrf": "", "message": exc.message}, status_code=exc.status
        )

    @app.exception_handler(store.NotFound)
    def not_found(request: Request, exc: store.NotFound) -> Response:
        return HTMLResponse(f"<p>{Markup.escape(str(exc))}</p>", status_code=404)

    @app.exception_handler(queue.BadFilter)
    def bad_filter(request: Request, exc: queue.BadFilter) -> Response:
        return templates.TemplateResponse(
            request, "error.html", {"me": None, "csrf": "", "message": str(exc)}, status_code=400
        )

    def done(url: str, message: str = "") -> RedirectResponse:
        return RedirectResponse(
            url + (("?" + urlencode({"msg": message})) if message else ""), status_code=303
        )

    # ---- sign-in -------------------------------------------------------------------------------

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        with tx() as cur:
            cur.execute("SELECT 1")
        return {"status": "ok"}

    @app.get("/login", response_class=HTMLResponse)
    def login_form(request: Request, next: str = "/alerts", error: str = "") -> Response:
        token = auth.new_token()
        resp = templates.TemplateResponse(
            request, "login.html", {"me": None, "csrf": token, "next": _local(next), "error": error}
        )
        resp.set_cookie(
            LOGIN_CSRF_COOKIE, token, httponly=True, samesite="lax", secure=cs.secure_cookies, path="/login"
        )
        return resp

    @app.post("/login")
    def login(
        request: Request,
        username: str = Form(""),
        password: str = Form(""),
        csrf_token: str = Form(""),
        next: str = Form("/alerts"),
    ) -> Response:
        cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
        if not cookie or not csrf_token or not auth.same(cookie, csrf_token):
            raise Refused(403, "the sign-in form's CSRF token is missing or stale: reload the page")
        with tx() as cur:
            token, message = store.sign_in(
                cur,
                username.strip(),
                password,
                max_attempts=cs.lockout_attempts,
                lock_for=timedelta(minutes=cs.lockout_minutes),
                session_hours=cs.session_hours,
            )
        if token is None:
            log.info("console sign-in refused for %r: %s", username[:64], message)
            return RedirectResponse(
                "/login?" + urlencode({"error": message, "next": _local(next)}), status_code=303
            )
        resp = RedirectResponse(_local(next), status_code=303)
        resp.set_cookie(
            SESSION_COOKIE,
            token,
            max_age=int(cs.session_hours * 3600),
            httponly=True,
            samesite="lax",
            secure=cs.secure_cookies,
        )
        resp.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
        return resp

    @app.post("/logout")
    def logout(request: Request, csrf_token: str = Form("")) -> Response:
        with tx() as cur:
            _form_session(request, cur, csrf_token)
            store.sign_out(cur, request.cookies.get(SESSION_COOKIE, ""))
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(SESSION_COOKIE)
        return resp

    @app.get("/")
    def home(request: Request) -> Response:
        with tx() as cur:
            _session(request, cur)
        return RedirectResponse("/alerts", status_code=303)

    # ---- alerts --------------------------------------------------------------------------------

    @app.get("/alerts", response_class=HTMLResponse)
    def alerts(request: Request, after: str = "") -> Response:
        params = dict(request.query_params)
        f = queue.parse_filters(params)
        with tx() as cur:
            s = _session(request, cur)
            rows, nxt = store.alert_page(cur, f, queue.decode_cursor(after))
            rules = store.rule_names()
            counted = store.summary(cur, f, rules)
            people = store.usernames(cur)
        return page(
            request,
            "alerts.html",
            s,
            rows=rows,
            next_url="/alerts?" + urlencode({**f.query(), "after": nxt}) if nxt else "",
            first_url="/alerts?" + urlencode(f.query()) if after else "",
            f=f,
            total=queue.capped(counted.total),
            facets={x: (counted.facets[x], counted.sampled[x]) for x in queue.FACETS},
            cap=queue.COUNT_CAP,
            facet_url=lambda facet, value: "/alerts?" + urlencode(f.query(**{facet: value})),
            rules=rules,
            people=people,
            severities=workflow.SEVERITIES,
            statuses=queue.ALERT_STATUSES,
        )

    @app.get("/alerts/{alert_id}", response_class=HTMLResponse)
    def alert_detail(request: Request, alert_id: int) -> Response:
        with tx() as cur:
            s = _session(request, cur)
            a = store.alert(cur, alert_id)
            around = store.transactions_around(cur, a["account_id"], a["txn_time"])
        return page(request, "alert.html", s, a=a, around=around, msg=request.query_params.get("msg", ""))

    @app.post("/alerts/{alert_id}/attach")
    def attach(request: Request, alert_id: int, csrf_token: str = Form("")) -> Response:
        with tx() as cur:
            s = _form_session(request, cur, csrf_token, "attach")
            result = store.attach(cur, alert_id, s.user, sla)
        if isinstance(result, Refusal):
            raise Refused(403, result.reason)
        return done(f"/cases/{result}", f"alert {alert_id} attached")

    # ---- cases ---------------------------------------------------------------------------------

    @app.get("/cases", response_class=HTMLResponse)
    def cases(request: Request, status: str = "", assignee: str = "") -> Response:
        if status and status not in workflow.STATUSES:
            raise queue.BadFilter(f"status: one of {', '.join(workflow.STATUSES)}")
        with tx() as cur:
            s = _session(request, cur)
            rows = store.case_list(cur, status=status, assignee=assignee[:64])
            people = store.usernames(cur)
        return page(
            request,
            "cases.html",
            s,
            rows=rows,
            status=status,
            assignee=assignee,
            people=people,
            statuses=workflow.STATUSES,
            msg=request.query_params.get("msg", ""),
        )

    @app.post("/cases")
    def create_case(
        request: Request,
        account_id: str = Form(""),
        severity: str = Form("medium"),
        csrf_token: str = Form(""),
    ) -> Response:
        account_id = account_id.strip()
        with tx() as cur:
            s = _form_session(request, cur, csrf_token, "create")
            if not account_id or len(account_id) > 200 or severity not in workflow.SEVERITIES:
                raise Refused(400, "name the account, and a severity")
            case_id = store.open_case(cur, account_id, severity, s.username, sla)
        return done(f"/cases/{case_id}")

    @app.post("/cases/claim-next")
    def claim_next(request: Request, csrf_token: str = Form("")) -> Response:
        with tx() as cur:
            s = _form_session(request, cur, csrf_token, "claim")
            result = store.claim_next(cur, s.user)
        if isinstance(result, Refusal):
            return done("/cases", result.reason)
        return done(f"/cases/{result}", "claimed")

    @app.get("/cases/{case_id}", response_class=HTMLResponse)
    def case_detail(request: Request, case_id: int) -> Response:
        with tx() as cur:
            s = _session(request, cur)
            c = store.case_row(cur, case_id)
            alerts = store.case_alerts(cur, case_id)
            events = store.case_events(cur, case_id)
            links = store.linked_cases(cur, case_id)
            people = store.usernames(cur)
            cur.execute(
                """SELECT a.alert_id, a.alert_type, a.severity, a.created_at FROM alerts a
                   LEFT JOIN case_alerts ca ON ca.alert_id = a.alert_id
                   WHERE a.account_id = %s AND ca.alert_id IS NULL
                   ORDER BY a.created_at DESC, a.alert_id DESC LIMIT 50""",
                (c["account_id"],),
            )
            loose = cur.fetchall()
        return page(
            request,
            "case.html",
            s,
            c=c,
            alerts=alerts,
            events=events,
            links=links,
            people=people,
            loose=loose,
            outcomes=workflow.OUTCOMES,
            msg=request.query_params.get("msg", ""),
            may=lambda action: workflow.may(s.role, action),
        )

    @app.post("/cases/{case_id}/act")
    def case_act(
        request: Request,
        case_id: int,
        action: str = Form(""),
        assignee: str = Form(""),
        outcome: str = Form(""),
        reason: str = Form(""),
        text: str = Form(""),
        csrf_token: str = Form(""),
    ) -> Response:
        with tx() as cur:
            s = _form_session(request, cur, csrf_token)
            if action not in workflow.ACTIONS:
                raise Refused(400, f"unknown action {action[:40]!r}")
            result = store.act(
                cur,
                case_id,
                s.user,
                CaseRequest(
                    action,
                    assignee=assignee or None,
                    outcome=outcome or None,
                    reason=reason[:2000],
                    text=text[:4000],
                ),
            )
        if isinstance(result, Refusal):
            return done(f"/cases/{case_id}", f"refused: {result.reason}")
        return done(f"/cases/{case_id}", f"{action.replace('_', ' ')}: done")

    @app.post("/cases/{case_id}/attach")
    def case_attach(
        request: Request, case_id: int, alert_id: int = Form(...), csrf_token: str = Form("")
    ) -> Response:
        with tx() as cur:
            s = _form_session(request, cur, csrf_token, "attach")
            c = store.case_row(cur, case_id)
            a = store.alert(cur, alert_id)
            if a["account_id"] != c["account_id"] or c["status"] == "closed":
                raise Refused(400, "an alert attaches to its own account's open case")
            result = store.attach(cur, alert_id, s.user, sla)
        if isinstance(result, Refusal):
            raise Refused(403, result.reason)
        return done(f"/cases/{case_id}", f"alert {alert_id} attached")

    @app.post("/cases/{case_id}/link")
    def case_link(
        request: Request,
        case_id: int,
        other: int = Form(...),
        reason: str = Form(""),
        csrf_token: str = Form(""),
    ) -> Response:
        with tx() as cur:
            s = _form_session(request, cur, csrf_token, "link")
            result = store.link(cur, case_id, other, s.user, reason[:2000])
        if isinstance(result, Refusal):
            return done(f"/cases/{case_id}", f"refused: {result.reason}")
        return done(f"/cases/{case_id}", f"linked to case {other}")

    @app.get("/cases/{case_id}/export", response_class=HTMLResponse)
    def case_export(request: Request, case_id: int) -> Response:
        with tx() as cur:
            s = _session(request, cur)
            data = store.case_export(cur, case_id)
        return page(request, "export.html", s, **data)

    @app.get("/cases/{case_id}/export.json")
    def case_export_json(request: Request, case_id: int) -> Response:
        with tx() as cur:
            _session(request, cur)
            data = store.case_export(cur, case_id)
        body = json.dumps(store.as_json(data), indent=2, sort_keys=True)  # ensure_ascii: bidi as \u escapes
        return Response(
            body,
            media_type="application/json",
            headers={"Content-Disposition": f'attachment; filename="case-{case_id}.json"'},
        )

    # ---- accounts ------------------------------------------------------------------------------

    @app.get("/accounts/{account_id}", response_class=HTMLResponse)
    def account(request: Request, account_id: str) -> Response:
        with tx() as cur:
            s = _session(request, cur)
            rows = store.recent_transactions(cur, account_id)
            cur.execute(
                "SELECT case_id, status, outcome FROM cases WHERE account_id = %s ORDER BY case_id DESC LIMIT 20",
                (account_id,),
            )
            account_cases = cur.fetchall()
        return page(
            request,
            "account.html",
            s,
            account_id=account_id,
            rows=list(reversed(rows)),
            svg=Markup(chart.amounts_svg(rows)),
            cases=account_cases,
        )

    from console import admin_pages

    admin_pages.register(app, settings, db, tx, _session, _form_session, page, done)
    return app


def _local(url: str) -> str:
    """Only same-site paths after sign-in: never an open redirect."""
    return url if url.startswith("/") and not url.startswith("//") and "\\" not in url else "/alerts"
