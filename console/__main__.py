"""The analysts' console.

    python -m console serve                     the web page on CONSOLE_ADDRESS:CONSOLE_PORT
    python -m console add-user NAME --role ROLE create (or reset) a user; the password is read
                                                from standard input (one line)

Both log in to PostgreSQL as the console's role (POSTGRES_CONSOLE_USER/_PASSWORD). Exit codes:
0 done, 2 configuration or database problem, 1 the request was refused (a bad role or password).
"""

from __future__ import annotations

import argparse
import getpass
import logging
import sys
from collections.abc import Sequence

from console import workflow
from utils.errors import ConfigError, DatabaseUnavailable

log = logging.getLogger("console")


def main(argv: Sequence[str] | None = None) -> int:
    from utils.config import load_settings
    from utils.logs import configure_logging

    parser = argparse.ArgumentParser(prog="python -m console", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    serve = sub.add_parser("serve", help="run the web page [env: CONSOLE_PORT, CONSOLE_ADDRESS]")
    serve.add_argument("--port", type=int, help="port (default CONSOLE_PORT)")
    serve.add_argument("--address", help="listen address (default CONSOLE_ADDRESS)")
    add = sub.add_parser("add-user", help="create or reset a user; password from standard input")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=workflow.ROLES)
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        configure_logging(settings.log_level, settings.log_format)
        from console.app import console_database

        db = console_database(settings, maxconn=8 if args.cmd == "serve" else 1)
        if args.cmd == "add-user":
            return _add_user(db, args.name, args.role)
        import uvicorn

        from console.app import create_app

        app = create_app(settings, db)
        uvicorn.run(
            app,
            host=args.address or settings.console.address,
            port=args.port or settings.console.port,
            log_level=settings.log_level.lower(),
            proxy_headers=False,
            server_header=False,
        )
        return 0
    except (ConfigError, DatabaseUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _add_user(db: object, name: str, role: str) -> int:
    from psycopg2 import errors

    from console import store
    from utils.database import Database

    assert isinstance(db, Database)
    password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
    try:
        with db.connection() as conn, store.new_cursor(conn) as cur:
            store.add_user(cur, name, role, password)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except errors.CheckViolation:
        print("error: a username is 1-64 letters, digits or . _ @ -", file=sys.stderr)
        return 1
    print(f"user {name} ({role}) ready")
    return 0


if __name__ == "__main__":
    sys.exit(main())
