"""The one exception type raised at the boundary of the daemons package."""


class FleetError(Exception):
    """A problem a caller can act on: bad configuration, unreachable broker, bad CLI input."""


class ConfigError(FleetError):
    """A configuration value is missing or invalid; the message names the key or variable."""
