"""Container healthcheck for the consumer: healthy while its heartbeat file is fresh.

    python consumer/healthcheck.py [--file PATH] [--max-age SECONDS]

With CONSUMER_HEALTH_FILE set, the consumer touches that file after every poll loop, so the
file's age is how long ago the loop last came round. A process check would miss the failures
that matter here: a loop stuck in a rebalance, a hung database call or a deadlock leaves the
process alive but stops the heartbeat.

Docker runs this every interval inside the container, so it is standard library only: it
starts in a few milliseconds and cannot fail because an unrelated setting is malformed.
Exit status 0 means healthy, 1 unhealthy (the two codes Docker defines); the one line printed
says why, and `docker inspect` shows it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

HEALTH_FILE_ENV = "CONSUMER_HEALTH_FILE"
# Generous on purpose: a batch retried against a recovering database backs off between tries,
# and a statement timeout is retried a few times before the consumer gives up.
DEFAULT_MAX_AGE_S = 120.0


def check(path: str, max_age_s: float, now: float | None = None) -> tuple[bool, str]:
    """(healthy, reason) for the heartbeat file at `path`, judged at time `now` (default: now)."""
    if not path:
        return False, f"{HEALTH_FILE_ENV} is not set, so the consumer writes no heartbeat to check"
    try:
        mtime = os.stat(path).st_mtime
    except FileNotFoundError:
        return False, f"no heartbeat yet: {path} does not exist"
    except OSError as exc:
        return False, f"cannot read the heartbeat {path}: {exc.strerror}"
    # A file dated slightly in the future (clock adjusted since) counts as just touched.
    age = max(0.0, (time.time() if now is None else now) - mtime)
    if age > max_age_s:
        return False, f"heartbeat {path} is {age:.0f} s old (limit {max_age_s:g} s): the poll loop is stuck"
    return True, f"heartbeat {age:.1f} s old"


def _positive_seconds(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text}: must be more than 0 seconds")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Exit 0 if the consumer's heartbeat file is fresh, else 1.")
    parser.add_argument(
        "--file",
        default=os.environ.get(HEALTH_FILE_ENV, ""),
        help=f"heartbeat file the consumer touches [env: {HEALTH_FILE_ENV}]",
    )
    parser.add_argument(
        "--max-age",
        type=_positive_seconds,
        default=DEFAULT_MAX_AGE_S,
        help=f"seconds since the last touch that still count as healthy (default {DEFAULT_MAX_AGE_S:g})",
    )
    args = parser.parse_args(argv)
    healthy, reason = check(args.file, args.max_age)
    print(reason)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
