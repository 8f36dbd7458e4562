"""What every fleet daemon shares: configuration, MQTT session, codecs, metrics, logging, run loop."""

from daemons.errors import FleetError

__all__ = ["FleetError"]
