"""fleetctl's exit codes and error, shared by its commands (documented in `fleetctl --help`)."""

from __future__ import annotations

from typing import Any

OK, USAGE, REJECTED, UNREACHABLE, DENIED = 0, 2, 3, 4, 5


class CliError(Exception):
    def __init__(self, code: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra
