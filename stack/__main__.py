"""`python -m stack up|down|status|env`: the native stack from the command line (`make stack-up`).

stdout carries only the `export` lines of `up` and `env` (for `eval "$(make -s stack-up)"`);
progress and errors go to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from pathlib import Path

from stack.orchestrator import LocalStack, StackEnv, export_lines
from utils.config import load_settings
from utils.errors import StackError, TxmonError

log = logging.getLogger("stack")


def _ensure_topics(stack_env: StackEnv) -> None:
    from utils.kafka_cleanup import admin_client, ensure_topics

    settings = load_settings()
    with contextlib.closing(admin_client(stack_env.kafka_settings())) as admin:
        # As many copies as this stack's brokers allow (3 on a cluster), whatever .env says.
        outcome_by_topic = ensure_topics(
            admin, settings.kafka, replication_factor=stack_env.kafka_replication_factor
        )
        for topic, outcome in outcome_by_topic.items():
            log.info("topic %s: %s", topic, outcome)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m stack",
        description="Run ZooKeeper + Kafka + PostgreSQL natively (the Compose design's services).",
        epilog=(
            "Ports: TXMON_STACK_ZK_PORT, TXMON_STACK_KAFKA_PORT, TXMON_STACK_PG_PORT "
            "(default 2181, 9092, 5432). "
            "Broker: TXMON_KAFKA_IMPL=auto|apache|tansu (auto: Apache Kafka, tansu only without Maven). "
            "TXMON_KAFKA_BROKERS=3: a replicated cluster on TXMON_STACK_KAFKA_PORT, +1, +2. "
            'Cache: TXMON_CACHE_DIR (default ~/.cache/txmon). Usage: eval "$(python -m stack up)"'
        ),
    )
    state_help = "data, logs, pidfiles, passwords [default: $TXMON_CACHE_DIR/stack]"
    parser.add_argument("--state-dir", type=Path, default=None, help=state_help)
    # Accepted after the subcommand too (`up --state-dir D`); SUPPRESS keeps the one given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", type=Path, default=argparse.SUPPRESS, help=state_help)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser(
        "up", parents=[common], help="start what is missing, wait until ready, print export lines"
    )
    up.add_argument(
        "--isolated",
        action="store_true",
        help="ignore KAFKA_BOOTSTRAP_SERVERS / POSTGRES_HOST:PORT even if they answer; start everything here",
    )
    up.add_argument(
        "--no-topics",
        action="store_true",
        help="do not create KAFKA_TOPIC and KAFKA_DLQ_TOPIC (only ever created on a broker this stack runs)",
    )
    down = sub.add_parser("down", parents=[common], help="stop what this stack started (data is kept)")
    down.add_argument(
        "--purge", action="store_true", help="also delete the state dir: all data and passwords"
    )
    sub.add_parser("status", parents=[common], help="which components run, where, and their logs")
    sub.add_parser("env", parents=[common], help="print export lines for the running stack")
    return parser


def _print_status(stack: LocalStack) -> int:
    all_up = True
    for st in stack.status():
        if st.mode == "unused":
            why = "the broker is tansu" if stack.kafka_impl() == "tansu" else "Kafka is external"
            print(f"{st.name:<10} unused ({why})")
            continue
        all_up &= st.up
        where = f"{st.address}" + (f" pid {st.pid}" if st.pid else "")
        extra = f" log {st.log}" if st.log else ""
        print(f"{st.name:<10} {'up' if st.up else 'DOWN':<5}{st.mode:<9} {where}{extra}")
    return 0 if all_up else 1


def main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    try:
        level = load_settings().log_level.upper()
    except Exception:
        level = "INFO"
    # stdout carries only the export lines (for `eval`); progress goes to stderr.
    logging.basicConfig(
        stream=sys.stderr,
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if level != "DEBUG":
        logging.getLogger("kafka").setLevel(logging.CRITICAL)  # refused connections while a broker boots
    try:
        stack = LocalStack.from_env(state_dir=args.state_dir, isolated=getattr(args, "isolated", False))
        if args.command == "up":
            stack_env = stack.up()
            if args.no_topics:
                pass
            elif stack.is_local("kafka"):
                _ensure_topics(stack_env)
            else:  # a broker someone else runs is used as it is: no side effects on it
                log.info("kafka is external: `make topics` creates the pipeline's topics there if missing")
            sys.stdout.write(export_lines(stack_env.as_environ()))
        elif args.command == "env":
            if not (stack.state_dir / "stack.json").exists():
                raise StackError(f"no stack in {stack.state_dir}: run `make stack-up` (or `up`) first")
            sys.stdout.write(export_lines(stack.env().as_environ()))
        elif args.command == "down":
            if args.purge:
                stack.destroy()
            else:
                stack.down()
        else:
            return _print_status(stack)
    except TxmonError as exc:  # StackError, or a ConfigError from the environment / .env
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
