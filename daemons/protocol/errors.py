"""The exception families of the fleet: requests refused (`Rejected`) and problems an operator fixes
(`FleetError`, `ConfigError`)."""

from __future__ import annotations


class Rejected(ValueError):
    """A request refused with a PROTOCOL §0 error code (400, 404, 409, 413, 415, 500 ...).

    Raised by the rules (codec, selector, shadow, rollout) and turned into a `/rejected` answer
    (`daemons.protocol.messages.error_body`) by the handler that received the request.
    A ValueError, so callers that only care that a value was refused may catch that.
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class FleetError(Exception):
    """A problem a caller can act on: bad configuration, unreachable broker, bad CLI input."""


def env_name(field_name: str) -> str:
    """The environment variable of a settings field: `FLEET_` + the upper-cased field name."""
    return "FLEET_" + field_name.upper()


class ConfigError(FleetError):
    """A configuration value is missing or invalid; the message names the key or variable."""

    @classmethod
    def of(cls, field_name: str, why: str) -> ConfigError:
        """The error for one settings field, named as the operator sets it: `FLEET_X (x): why`."""
        return cls(f"{env_name(field_name)} ({field_name}): {why}")
