"""Passwords, session tokens and lockout: what sign-in decides, without the database.

Passwords are argon2id hashes (argon2-cffi's defaults, the encoded string carries its
parameters). The session cookie holds a random token; the database stores only its sha256, so
a copy of the sessions table signs nobody in. Lockout: `CONSOLE_LOCKOUT_ATTEMPTS` failures in a
row lock the account for `CONSOLE_LOCKOUT_MINUTES`, counted whether or not the account exists,
so the answer never tells which usernames exist.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_HASHER = PasswordHasher()
# Verified when the username is unknown, so an unknown name costs the same time as a wrong password.
_DUMMY_HASH = _HASHER.hash("not a password anybody has")
MIN_PASSWORD_LENGTH = 12


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"a password has at least {MIN_PASSWORD_LENGTH} characters")
    return _HASHER.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    try:
        return _HASHER.verify(stored_hash or _DUMMY_HASH, password) and stored_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def same(a: str, b: str) -> bool:
    """Constant-time comparison (CSRF tokens)."""
    return hmac.compare_digest(a.encode(), b.encode())


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one sign-in attempt changes on the account: the new counter and lock."""

    allowed: bool
    failed_attempts: int
    locked_until: datetime | None
    message: str


def attempt(
    *,
    password_ok: bool,
    failed_attempts: int,
    locked_until: datetime | None,
    now: datetime,
    max_attempts: int,
    lock_for: timedelta,
) -> Attempt:
    """A locked account refuses even the right password until the lock ends; a success resets
    the counter; the `max_attempts`-th failure in a row locks it."""
    if locked_until is not None and now < locked_until:
        return Attempt(
            False, failed_attempts, locked_until, "account locked after repeated failures: try later"
        )
    if password_ok:
        return Attempt(True, 0, None, "")
    failures = failed_attempts + 1
    if failures >= max_attempts:
        return Attempt(False, 0, now + lock_for, "account locked after repeated failures: try later")
    return Attempt(False, failures, None, "wrong username or password")
