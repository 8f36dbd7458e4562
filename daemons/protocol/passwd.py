"""mosquitto password files (`user:$7$...` lines), written and checked in Python.

Format, from mosquitto 2.0's `mosquitto_passwd` (apps/mosquitto_passwd, `output_new_password`):
`$7$<iterations>$<base64 salt>$<base64 PBKDF2-HMAC-SHA512(password, salt, iterations)>`, with a
12-byte random salt, 101 iterations and a 64-byte hash. One format serves mosquitto (`password_file`)
and the amqtt fleet plugin (accounts of daemons and operators), so one file works with both brokers.
`mosquitto_passwd -U` would hash thousands of simulated devices one process at a time; this is
the same computation in-process.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Iterable
from pathlib import Path

ITERATIONS = 101  # mosquitto_passwd's PW_DEFAULT_ITERATIONS
SALT_BYTES = 12


class PasswdError(ValueError):
    """A password file that cannot be read or holds a line of an unknown format."""


def hash_password(password: str, *, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    """The `$7$` hash of `password`, as mosquitto_passwd writes it."""
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """True when `password` matches a `$7$` hash; False for any other hash or a malformed one."""
    parts = stored.split("$")
    if len(parts) != 5 or parts[0] or parts[1] != "7":
        return False
    try:
        iterations = int(parts[2])
        salt = base64.b64decode(parts[3], validate=True)
        expected = base64.b64decode(parts[4], validate=True)
    except ValueError:
        return False
    if not 1 <= iterations <= 1_000_000:
        return False
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return hmac.compare_digest(digest, expected)


def read_passwd(path: str | Path) -> dict[str, str]:
    """`{username: hash}` of a password file; blank lines and `#` comments are skipped.

    Raises PasswdError when the file is missing or a line has no `user:hash` shape.
    """
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise PasswdError(f"{path}: {exc.strerror}") from None
    users: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, stored = line.partition(":")
        if not sep or not user or not stored.startswith("$"):
            raise PasswdError(f"{path}:{number}: expected user:$7$... (the line is not shown)")
        users[user] = stored
    return users


def write_passwd(path: str | Path, entries: Iterable[tuple[str, str]]) -> int:
    """Write `(username, clear password)` pairs as a fresh mode-0600 password file; the count written.

    Raises PasswdError for a username mosquitto cannot store (empty, or holding `:` or a newline).
    """
    lines = []
    for user, password in entries:
        if not user or ":" in user or "\n" in user:
            raise PasswdError(f"unusable username {user!r}")
        lines.append(f"{user}:{hash_password(password)}\n")
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.writelines(lines)
    os.replace(tmp, target)
    return len(lines)
