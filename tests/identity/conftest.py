"""Fixtures of the identity tests: a fleet PKI, a fleet secret and the accounts' password file."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

import pytest

from daemons.cli import pki
from daemons.protocol.acl import load_acl
from daemons.protocol.keys import device_password, parse_hex_key
from daemons.protocol.passwd import write_passwd


@dataclass
class Fleet:
    dir: Path
    secret: str
    accounts: dict[str, str]  # account -> clear password
    passwd: Path

    def device_password(self, device: str) -> str:
        return device_password(parse_hex_key(self.secret), device)

    def cert(self, device: str) -> tuple[str, str]:
        crt, key = pki.issue(self.dir / "pki", device)
        return str(crt), str(key)

    @property
    def ca(self) -> str:
        return str(self.dir / "pki" / "fleet-ca.crt")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    d = tmp_path_factory.mktemp("fleet")
    pki.init(d / "pki", ["localhost", "127.0.0.1"])
    accounts = {name: secrets.token_urlsafe(16) for name in load_acl().users}
    passwd = d / "passwd"
    write_passwd(passwd, accounts.items())
    return Fleet(d, secrets.token_hex(32), accounts, passwd)
