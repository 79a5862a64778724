"""Manage the alert rules as versioned data.

    python -m consumer.rulesets show [--version N]         the active set (or version N) as YAML
    python -m consumer.rulesets validate FILE              check a file; names each problem's line and fix
    python -m consumer.rulesets publish FILE --reason TEXT store FILE as a new version and activate it
    python -m consumer.rulesets history                    versions and activations, newest first
    python -m consumer.rulesets activate N [--reason TEXT] make version N active again (roll back)
    python -m consumer.rulesets backtest [FILE] [--since T] [--until T] [--json] [--csv PATH]
                                                           replay stored transactions with FILE (or,
                                                           without it, the versions that ran: a self-check)

`show`, `validate`, `history` and `backtest` work as the app role (POSTGRES_USER); `publish` and
`activate` log in as you: `--user NAME` (default: PGUSER, else your user name), a member of
txmon_rules_admin, with the password from PGPASSWORD or ~/.pgpass (libpq's own). The history
records that login, taken by the server (session_user); there is no way to type another name. Exit codes: 0 done, 1 the file or
version is refused (nothing changed), 2 configuration or database problem, 3 the backtest's
self-check did not reproduce the stored alerts (the first differences are printed).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import getpass
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

if __package__ in (None, ""):  # `python consumer/rulesets/__main__.py`: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import psycopg2
import psycopg2.extensions

from consumer.rulesets import backtest, backtest_db, document, store
from consumer.rulesets.model import RuleSet, StateLimits
from utils.config import Settings, load_settings
from utils.database import connect
from utils.errors import TxmonError

log = logging.getLogger("consumer.rulesets")


def _who() -> str:
    if os.environ.get("PGUSER"):
        return os.environ["PGUSER"]
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in a container without /etc/passwd entry
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m consumer.rulesets",
        description="Manage the alert rules as versioned data (see docs/rules-as-data.md).",
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    show = sub.add_parser("show", help="print the active rule set (or version N) as YAML")
    show.add_argument("--version", type=int, help="a published version instead of the active one")
    validate = sub.add_parser("validate", help="check FILE; each problem names its line and fix")
    validate.add_argument("file", type=Path)
    publish = sub.add_parser("publish", help="store FILE as a new immutable version and activate it")
    publish.add_argument("file", type=Path)
    publish.add_argument("--reason", required=True, help="why: kept with the version for good")
    publish.add_argument(
        "--user", default=_who(), help="your PostgreSQL login [env: PGUSER; default: your user name]"
    )
    publish.add_argument("--by", help=argparse.SUPPRESS)
    sub.add_parser("history", help="list versions and activations, newest first")
    activate = sub.add_parser("activate", help="make version N active (roll back or forward)")
    activate.add_argument("version", type=int)
    activate.add_argument("--reason", help="why (default: 'activated version N')")
    activate.add_argument(
        "--user", default=_who(), help="your PostgreSQL login [env: PGUSER; default: your user name]"
    )
    activate.add_argument("--by", help=argparse.SUPPRESS)
    backtest = sub.add_parser(
        "backtest",
        help="replay stored transactions with FILE (without FILE: the versions that ran, a self-check)",
    )
    backtest.add_argument("file", type=Path, nargs="?", help="candidate rule set (YAML, as `show` prints)")
    backtest.add_argument("--since", type=_instant, help="event time from (ISO 8601; UTC unless given)")
    backtest.add_argument("--until", type=_instant, help="event time before (ISO 8601; UTC unless given)")
    backtest.add_argument("--json", action="store_true", help="print the result as JSON")
    backtest.add_argument("--csv", type=Path, metavar="PATH", help="write the added/removed/changed alerts")
    return parser


def _instant(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time, e.g. 2026-11-28T09:00") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class Refused(TxmonError):
    """The request was understood and refused (invalid file, unknown version): exit 1."""


def main(argv: Sequence[str] | None = None) -> int:
    from utils.logs import configure_logging

    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        configure_logging(settings.log_level, settings.log_format)
        if args.cmd == "backtest":
            return _backtest(args, settings)
        print(_run(args, settings), end="")
    except (Refused, document.RuleSetInvalid, store.UnknownVersion) as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 1
    except TxmonError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except psycopg2.Error as exc:
        print(f"error: the database refused: {str(exc).strip()}", file=sys.stderr)
        return 2
    return 0


def _run(args: argparse.Namespace, settings: Settings) -> str:
    environment = RuleSet.from_thresholds(settings.rules)
    if args.cmd == "validate":
        rule_set = _read(args.file, settings)
        return f"{args.file}: valid ({rule_set.summary()})\n"
    if args.cmd == "show":
        with contextlib.closing(connect(settings.postgres)) as conn, conn.cursor() as cur:
            if args.version is not None:
                return document.dump(store.get(cur, args.version, settings.rules))
            return document.dump(store.active(cur, settings.rules) or environment)
    if args.cmd == "history":
        with contextlib.closing(connect(settings.postgres)) as conn, conn.cursor() as cur:
            return _history(store.versions(cur), store.activations(cur))
    if args.cmd in ("publish", "activate") and args.by is not None:
        raise Refused(
            "--by is gone: the record shows the login that did it, taken by the database "
            f"(session_user); log in as yourself with --user NAME (now {args.user!r})"
        )
    if args.cmd == "publish":
        rule_set = _read(args.file, settings)
        with _person(settings, args.user) as cur:
            done = store.publish(cur, rule_set, reason=args.reason, environment=environment)
        lines = (
            [f"stored the environment's settings as version 1 ({store.INITIAL_REASON})"]
            if done.seeded
            else []
        )
        if done.created:
            lines.append(f"published version {done.version} ({rule_set.summary()}); it is active")
        else:
            lines.append(f"identical to the active version {done.version}: nothing new published")
        log.info("rule set: %s", "; ".join(lines), extra={"rule_set_version": done.version, "by": args.user})
        return "\n".join(lines) + "\n"
    if args.cmd == "activate":
        reason = args.reason or f"activated version {args.version}"
        with _person(settings, args.user) as cur:
            changed = store.activate(cur, args.version, reason=reason)
        if not changed:
            return f"version {args.version} is already active: nothing changed\n"
        log.info(
            "rule set: version %d activated by %s",
            args.version,
            args.user,
            extra={"rule_set_version": args.version, "by": args.user, "reason": reason},
        )
        return f"version {args.version} is active\n"
    raise AssertionError(args.cmd)  # argparse allows only the commands above


_SHOWN_DIFFERENCES = 10


def _backtest(args: argparse.Namespace, settings: Settings) -> int:
    if args.since is not None and args.until is not None and args.since >= args.until:
        raise Refused(f"--since {args.since.isoformat()} is not before --until {args.until.isoformat()}")
    candidate = None if args.file is None else _read(args.file, settings)
    scope = backtest_db.Scope(settings.kafka.topic, args.since, args.until)
    run = backtest_db.run_backtest(settings, scope, candidate)
    outcome = run.outcome
    self_check = candidate is None
    if args.csv is not None:
        with args.csv.open("w", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerows(backtest.csv_rows(outcome.changes))
    rate = outcome.transactions / run.elapsed_s if run.elapsed_s > 0 else 0.0
    first = outcome.changes[:_SHOWN_DIFFERENCES]
    if args.json:
        print(
            json.dumps(
                {
                    "mode": "self-check" if self_check else "candidate",
                    "file": None if args.file is None else str(args.file),
                    "topic": scope.topic,
                    "since": None if args.since is None else args.since.isoformat(),
                    "until": None if args.until is None else args.until.isoformat(),
                    "versions": run.versions,
                    "transactions": outcome.transactions,
                    "elapsed_s": round(run.elapsed_s, 3),
                    "transactions_per_s": round(rate),
                    "identical": outcome.identical,
                    "rules": [r.as_dict() for r in outcome.rules],
                    "first_differences": [dataclasses.asdict(c) for c in first],
                    "version_conflicts": run.conflicts,
                },
                indent=2,
            )
        )
    else:
        what = "the versions that ran" if self_check else str(args.file)
        window = (
            "all event times"
            if args.since is None and args.until is None
            else f"event time [{args.since or 'start'}, {args.until or 'end'})"
        )
        print(
            f"backtest of {what} on {outcome.transactions:,} transactions of {scope.topic} ({window}) "
            f"in {run.elapsed_s:.1f} s ({rate:,.0f}/s)"
        )
        print(backtest.format_table(outcome))
        print("\n".join(_verdicts(settings, args.since, args.until)))
        if run.conflicts:
            print(f"partitions whose stored alerts carry different versions: {run.conflicts}")
    if self_check and not outcome.identical:
        print(
            f"self-check FAILED: {len(outcome.changes)} alert(s) differ from the stored ones; the first:",
            file=sys.stderr,
        )
        for c in first:
            print(f"  {c.change} {c.rule} {c.transaction_id} {c.severity} {dict(c.details)}", file=sys.stderr)
        return 3
    if self_check and not args.json:
        print("self-check passed: the replay reproduces every stored alert")
    return 0


def _verdicts(settings: Settings, since: datetime | None, until: datetime | None) -> list[str]:
    """The analysts' verdicts on the same window: precision from real outcomes, beside the
    simulator's in the table above."""
    from utils import verdicts

    with contextlib.closing(connect(settings.postgres)) as conn, conn.cursor() as cur:
        return verdicts.format_lines(verdicts.load(cur, since, until))


def _read(path: Path, settings: Settings) -> RuleSet:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise Refused(f"cannot read {path}: {exc}") from exc
    try:
        return document.load(text, settings.rules, StateLimits.from_settings(settings.consumer))
    except document.RuleSetInvalid as exc:
        listed = "\n".join(
            f"{path}:{p.line}:{p.column}: {p.path or '(top)'}: {p.message}. Fix: {p.fix}"
            for p in exc.problems
        )
        raise Refused(f"{path} is not a valid rule set ({len(exc.problems)} problem(s)):\n{listed}") from None


@contextlib.contextmanager
def _person(settings: Settings, user: str) -> Iterator[psycopg2.extensions.cursor]:
    """A cursor of `user`'s own login in one transaction (committed on success, rolled back on
    error). No password from settings: libpq reads PGPASSWORD or ~/.pgpass, as psql does."""
    pg = dataclasses.replace(
        settings.postgres, user=user, password="", migration_user="", migration_password=""
    )
    conn = connect(pg)
    try:
        with conn, conn.cursor() as cur:
            yield cur
    finally:
        conn.close()


def _history(versions: list[store.VersionInfo], activations: list[store.Activation]) -> str:
    if not versions:
        return "no version published: the environment's settings (ALERT_*) are in force\n"
    lines = ["versions (* = active):"]
    for v in versions:
        mark = "*" if v.active else " "
        lines.append(
            f"{mark} {v.version:>4}  {v.published_at:%Y-%m-%d %H:%M:%S%z}  {v.published_by}: {v.reason}"
        )
    lines.append("activations:")
    lines.extend(
        f"  {a.activated_at:%Y-%m-%d %H:%M:%S%z}  version {a.version} by {a.activated_by}: {a.reason}"
        for a in activations
    )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
