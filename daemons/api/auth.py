"""API tokens and roles (API.md §0): created by an admin, shown once, stored only as a hash.

Redis layout (namespace `fleet`):
- `fleet:api:tokens` hash: SHA-256 of the token (hex) -> JSON `{id, name, role, created_at,
  expires_at, revoked_at}`; `id` is the first 12 hex digits of the hash (what `list` shows and
  `revoke` takes). A token is 32 random bytes (`secrets`), so a plain SHA-256 is enough: there is
  nothing to brute-force, unlike a password.
- `fleet:api:session:<sha256 of the session id>` string: the token hash, with a TTL. The console
  keeps the session id in an HttpOnly, SameSite=Strict cookie; the token never reaches its JS.

Roles are ordered: viewer < operator < admin (each has the rights of the ones before).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

ROLES = ("viewer", "operator", "admin")
TOKEN_PREFIX = "fleet_"
SESSION_TTL_S = 12 * 3600
MAX_NAME = 64


class TokenError(ValueError):
    """A token request that cannot be honoured (bad role, name, ttl, unknown id)."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: a token's name and role."""

    id: str
    name: str
    role: str

    def may(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class TokenStore:
    def __init__(self, redis: Any, namespace: str = "fleet") -> None:
        self.redis = redis
        self.key = f"{namespace}:api:tokens"
        self.ns = namespace

    def create(self, name: str, role: str, ttl_days: float | None = None,
               now: float | None = None) -> dict[str, Any]:
        """A new token; the answer is the only place the secret appears: `{token, id, name, role,
        created_at, expires_at}` (epoch seconds; `expires_at` null for no expiry)."""
        if role not in ROLES:
            raise TokenError(f"role must be one of {', '.join(ROLES)}")
        if not name or len(name) > MAX_NAME or not name.isprintable():
            raise TokenError(f"name must be 1..{MAX_NAME} printable characters")
        if ttl_days is not None and not 0 < ttl_days <= 3650:
            raise TokenError("ttl_days must be in (0, 3650]")
        at = int(time.time() if now is None else now)
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        digest = _digest(secret)
        record = {"id": digest[:12], "name": name, "role": role, "created_at": at,
                  "expires_at": None if ttl_days is None else at + int(ttl_days * 86400),
                  "revoked_at": None}
        self.redis.hset(self.key, digest, json.dumps(record))
        return {"token": secret, **{k: v for k, v in record.items() if k != "revoked_at"}}

    def list(self) -> list[dict[str, Any]]:
        rows = [json.loads(v) for v in self.redis.hvals(self.key)]
        return sorted(rows, key=lambda r: (r["created_at"], r["id"]))

    def revoke(self, token_id: str, now: float | None = None) -> dict[str, Any]:
        for digest, raw in self.redis.hgetall(self.key).items():
            record: dict[str, Any] = json.loads(raw)
            if record["id"] == token_id or digest == token_id:
                if record["revoked_at"] is None:
                    record["revoked_at"] = int(time.time() if now is None else now)
                    self.redis.hset(self.key, digest, json.dumps(record))
                return record
        raise TokenError(f"no token with id {token_id!r}")

    def _check(self, digest: str, now: float | None) -> Principal | None:
        raw = self.redis.hget(self.key, digest)
        if not raw:
            return None
        record = json.loads(raw)
        at = time.time() if now is None else now
        expires = record["expires_at"]
        if record["revoked_at"] is not None or (expires is not None and expires <= at):
            return None
        return Principal(record["id"], record["name"], record["role"])

    def authenticate(self, secret: str, now: float | None = None) -> Principal | None:
        """The token's principal; None when unknown, revoked or expired."""
        if not secret.startswith(TOKEN_PREFIX) or len(secret) > 200:
            return None
        return self._check(_digest(secret), now)

    # -- console sessions --------------------------------------------------------------------

    def _session_key(self, session_id: str) -> str:
        return f"{self.ns}:api:session:{_digest(session_id)}"

    def open_session(self, secret: str) -> tuple[str, Principal] | None:
        principal = self.authenticate(secret)
        if principal is None:
            return None
        session_id = secrets.token_urlsafe(32)
        self.redis.set(self._session_key(session_id), _digest(secret), ex=SESSION_TTL_S)
        return session_id, principal

    def session(self, session_id: str, now: float | None = None) -> Principal | None:
        """The session's principal; the token is checked again, so a revoke ends its sessions too."""
        if not session_id or len(session_id) > 100:
            return None
        digest = self.redis.get(self._session_key(session_id))
        return self._check(digest, now) if digest else None

    def close_session(self, session_id: str) -> None:
        if session_id and len(session_id) <= 100:
            self.redis.delete(self._session_key(session_id))
