"""A `.env` for the Compose stack: .env.example with every `change-me-...` secret replaced.

Pure text in, text out (`render`); the caller decides where it is written. Every secret is 64
random bytes in URL-safe base64 (Airflow asks for at least 64 bytes of JWT secret, and the
alphabet survives a connection URL and a JSON string), except the Fernet key, whose format is
fixed: 32 bytes, URL-safe base64.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
from collections.abc import Callable, Mapping

PLACEHOLDER = "change-me-"
SECRET_BYTES = 64
FERNET_VARIABLE = "AIRFLOW_FERNET_KEY"
UID_VARIABLE = "AIRFLOW_UID"
# Airflow's image runs as this uid when AIRFLOW_UID is not a real user's.
AIRFLOW_IMAGE_UID = 50000

_ASSIGNMENT = re.compile(r"^(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)$")


def new_secret() -> str:
    return secrets.token_urlsafe(SECRET_BYTES)


def new_fernet_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def airflow_uid(host_uid: int) -> int:
    """The host user's uid, so files in ./airflow-data stay theirs; root's files would be
    root's anyway, so the image's own uid then."""
    return host_uid if host_uid != 0 else AIRFLOW_IMAGE_UID


def render(
    example: str,
    *,
    host_uid: int,
    overrides: Mapping[str, str] | None = None,
    secret: Callable[[], str] = new_secret,
    fernet_key: Callable[[], str] = new_fernet_key,
) -> str:
    """`example` with each placeholder replaced by a fresh secret, AIRFLOW_UID set for
    `host_uid`, and `overrides` applied to the variables they name (each must exist)."""
    pending = dict(overrides or {})
    out = []
    for line in example.splitlines():
        match = _ASSIGNMENT.match(line)
        if match:
            name, value = match["name"], match["value"]
            if name in pending:
                value = pending.pop(name)
            elif value.startswith(PLACEHOLDER):
                value = fernet_key() if name == FERNET_VARIABLE else secret()
            elif name == UID_VARIABLE:
                value = str(airflow_uid(host_uid))
            line = f"{name}={value}"
        out.append(line)
    if pending:
        raise KeyError(f"not variables of .env.example: {sorted(pending)}")
    return "\n".join(out) + "\n"


def added_secrets(example: str, existing: str, *, secret: Callable[[], str] = new_secret) -> str:
    """Lines to append to an existing env file: each `change-me-...` variable of `example` it
    lacks (a secret added to the stack after the file was written), with a fresh value and its
    comment. Empty when nothing is missing."""
    have = {m["name"] for m in map(_ASSIGNMENT.match, existing.splitlines()) if m}
    out: list[str] = []
    comment: list[str] = []
    for line in example.splitlines():
        match = _ASSIGNMENT.match(line)
        if match is None:
            comment = [*comment, line] if line.startswith("#") else []
            continue
        name, value = match["name"], match["value"]
        if name not in have and value.startswith(PLACEHOLDER):
            fresh = new_fernet_key() if name == FERNET_VARIABLE else secret()
            out += [*comment, f"{name}={fresh}"]
        comment = []
    return "\n".join(out) + "\n" if out else ""


def placeholders_left(text: str) -> list[str]:
    """Names whose value is still a placeholder (a hand-written .env may have some)."""
    names = []
    for line in text.splitlines():
        match = _ASSIGNMENT.match(line)
        if match and match["value"].startswith(PLACEHOLDER):
            names.append(match["name"])
    return names


# Names that hold a secret (as tests/unit/test_env_example.py and the Compose checks see them).
SECRET_NAME = re.compile(r"PASSWORD|SECRET|FERNET|_KEY$")
MIN_SECRET_BYTES = 32


def weak_secrets(text: str) -> list[str]:
    """Each line of an env file `make compose-up` must refuse, as `line N: NAME ...: the fix`:
    a value still the public `change-me-...` placeholder (it is on GitHub), or a secret shorter
    than MIN_SECRET_BYTES. An empty secret is left to Compose (`${VAR:?...}` names it)."""
    problems = []
    for number, line in enumerate(text.splitlines(), start=1):
        match = _ASSIGNMENT.match(line)
        if not match:
            continue
        name, value = match["name"], match["value"].strip().strip("'\"")
        if value.startswith(PLACEHOLDER):
            problems.append(
                f"line {number}: {name}={value} is the public placeholder from .env.example: replace it "
                "(python -c 'import secrets; print(secrets.token_urlsafe(48))')"
            )
        elif SECRET_NAME.search(name) and value and len(value.encode()) < MIN_SECRET_BYTES:
            problems.append(
                f"line {number}: {name} is {len(value.encode())} bytes: a secret needs at least "
                f"{MIN_SECRET_BYTES} (python -c 'import secrets; print(secrets.token_urlsafe(48))')"
            )
    return problems
