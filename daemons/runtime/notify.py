"""The sd_notify protocol: readiness, watchdog pings and stopping, both ends.

`Notifier` is the daemon's end: datagrams of `KEY=VALUE` lines sent to the `AF_UNIX` socket named
by `$NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace), as in sd_notify(3) and
sd_watchdog_enabled(3): `WATCHDOG_USEC` is the watchdog period, `WATCHDOG_PID` the process it is
meant for. Without `$NOTIFY_SOCKET` every call does nothing. `ReadinessListener` is the service
manager's end, for `fleet up` and the tests: one readiness signal instead of grepping logs.

Own code rather than a library: `sdnotify` has had no release since 2017, and `systemd-watchdog`
rate-limits on the wall clock and lets a send error escape into the caller's loop; the protocol
itself is a few lines.
"""

from __future__ import annotations

import contextlib
import os
import queue
import secrets
import socket
import threading
import time
from collections.abc import Callable, Mapping


def socket_address(name: str) -> str:
    """`$NOTIFY_SOCKET` as a socket address: `@x` is `x` in the abstract namespace."""
    return "\0" + name[1:] if name.startswith("@") else name


class Notifier:
    """Sends sd_notify messages; never raises (a lost notification must not stop the daemon)."""

    def __init__(self, env: Mapping[str, str] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        env = os.environ if env is None else env
        name = env.get("NOTIFY_SOCKET", "")
        self.address = socket_address(name) if len(name) > 1 and name[0] in "/@" else None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        for_us = not pid or (pid.isdigit() and int(pid) == os.getpid())
        # sd_watchdog_enabled(3): ping at half the period.
        self.ping_interval_s = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 and for_us else None
        self.clock = clock
        self._last_ping: float | None = None
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """Send one datagram of `KEY=VALUE` lines; False when there is no manager or it is gone."""
        if self.address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto("\n".join(fields).encode() + b"\n", self.address)
            return True
        except OSError:
            return False

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def watchdog(self) -> bool:
        """Ping the watchdog if half its period has passed since the last ping; True when sent."""
        if self.ping_interval_s is None:
            return False
        now = self.clock()
        if self._last_ping is not None and now - self._last_ping < self.ping_interval_s:
            return False
        self._last_ping = now
        return self.send("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class ReadinessListener:
    """A notification socket for child processes: `env()` goes into the child's environment.

    Abstract-namespace address (nothing to clean up on disk). Messages are parsed into dicts, one
    per datagram, and kept in arrival order in `messages`.
    """

    def __init__(self, watchdog_s: float | None = None) -> None:
        self.name = f"@fleet-notify-{os.getpid()}-{secrets.token_hex(6)}"
        self.watchdog_s = watchdog_s
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.bind(socket_address(self.name))
        self._sock.settimeout(0.2)
        self.messages: list[dict[str, str]] = []
        self._arrivals: queue.Queue[dict[str, str]] = queue.Queue()
        self._closed = threading.Event()
        self._reader = threading.Thread(target=self._read, name="notify-listener", daemon=True)
        self._reader.start()

    def env(self) -> dict[str, str]:
        out = {"NOTIFY_SOCKET": self.name}
        if self.watchdog_s is not None:
            out["WATCHDOG_USEC"] = str(int(self.watchdog_s * 1e6))
        return out

    def _read(self) -> None:
        while not self._closed.is_set():
            try:
                data = self._sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode(errors="replace").splitlines()
                          if "=" in line)
            self.messages.append(fields)
            self._arrivals.put(fields)

    def wait_for(self, key: str, value: str = "1", timeout: float = 20.0,
                 alive: Callable[[], bool] = lambda: True) -> bool:
        """Wait for a message with `key=value` (earlier ones count); False on timeout or death."""
        if any(m.get(key) == value for m in self.messages):
            return True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and alive():
            try:
                fields = self._arrivals.get(timeout=0.1)
            except queue.Empty:
                continue
            if fields.get(key) == value:
                return True
        return any(m.get(key) == value for m in self.messages)

    def wait_ready(self, timeout: float = 20.0, alive: Callable[[], bool] = lambda: True) -> bool:
        return self.wait_for("READY", "1", timeout, alive)

    def count(self, key: str, value: str = "1") -> int:
        return sum(1 for m in list(self.messages) if m.get(key) == value)

    def close(self) -> None:
        """Unbind the address: senders get an error from here on (Notifier.send returns False)."""
        self._closed.set()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the reader blocked in recv
        self._reader.join(1.0)
        self._sock.close()
