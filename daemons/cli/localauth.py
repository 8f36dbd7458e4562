"""Credentials of a local run (`fleet up`): fleet secret, account passwords, password file, PKI.

Everything lives in the run's directory, made once and reused (mode 0600): `fleet-secret` (hex; every
simulated device's password derives from it, keys.device_password), `accounts.json` (one random
password per account of the shipped ACL: each daemon, `operator`, `api`; `operator.password` holds
the operator's alone, for `mosquitto_sub -P "$(cat ...)"`), `pki/` (fleetctl pki init)
and, for mosquitto, `passwd` (the accounts and the simulated devices, `$7$` hashes). mosquitto 2.0.11
cannot derive passwords itself, so the devices it should accept are written into its password file;
the embedded broker derives them and its password file holds the accounts only.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from daemons.cli import pki
from daemons.cli.localstack import Server, start_amqtt, start_mosquitto_shipped
from daemons.protocol.acl import load_acl
from daemons.protocol.keys import device_password, parse_hex_key
from daemons.protocol.passwd import write_passwd

OPERATOR = "operator"


def _private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


@dataclass
class LocalAuth:
    workdir: Path
    secret: str = field(repr=False)  # hex
    accounts: dict[str, str] = field(repr=False)  # account -> clear password

    def device_password(self, device: str) -> str:
        return device_password(parse_hex_key(self.secret), device)

    @property
    def operator(self) -> tuple[str, str]:
        return OPERATOR, self.accounts[OPERATOR]

    def mosquitto_passwd(self, devices: Iterable[str]) -> Path:
        """Write `passwd`: every account, and each device with its derived password."""
        path = self.workdir / "passwd"
        write_passwd(path, [*self.accounts.items(), *((d, self.device_password(d)) for d in devices)])
        return path

    def pki(self) -> Path:
        """The run's PKI (`pki/`, made by fleetctl pki init for localhost and 127.0.0.1 when missing)."""
        d = self.workdir / "pki"
        if not (d / "server.crt").exists():
            pki.init(d, ["localhost", "127.0.0.1"])
        return d


def prepare(workdir: Path) -> LocalAuth:
    """Load or make the run's fleet secret and account passwords (every `user` of the shipped ACL)."""
    workdir.mkdir(parents=True, exist_ok=True)
    secret_file, accounts_file = workdir / "fleet-secret", workdir / "accounts.json"
    if not secret_file.exists():
        _private(secret_file, secrets.token_hex(32))
    secret = secret_file.read_text().strip()
    accounts: dict[str, str] = json.loads(accounts_file.read_text()) if accounts_file.exists() else {}
    missing = [name for name in load_acl().users if name not in accounts]
    if missing:
        accounts.update({name: secrets.token_urlsafe(18) for name in missing})
        _private(accounts_file, json.dumps(accounts, indent=1, sort_keys=True))
    # For the shell: mosquitto_sub -u operator -P "$(cat <workdir>/operator.password)" ...
    _private(workdir / f"{OPERATOR}.password", accounts[OPERATOR])
    return LocalAuth(workdir, secret, accounts)


def sim_device_ids(count: int, prefix: str = "sim", first: int = 0) -> list[str]:
    """The simulator's device ids (daemons.sim's naming: `<prefix>-<n:05d>`), for mosquitto's file."""
    return [f"{prefix}-{first + i:05d}" for i in range(count)]


def start_broker(kind: str, workdir: Path, port: int, auth: LocalAuth, devices: Iterable[str]) -> Server:
    """mosquitto on the shipped config (its password file lists `devices`) or the embedded broker,
    both with authentication and the ACL on; `port` is the loopback password listener (0: any)."""
    if kind == "amqtt":
        return start_amqtt(workdir, port, secret=auth.secret, accounts=auth.accounts)
    return start_mosquitto_shipped(workdir, auth.pki(), auth.mosquitto_passwd(devices), port)
