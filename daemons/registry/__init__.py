"""The device registry: hw, fw and tags per device, and the indexes selectors are resolved with."""

from daemons.registry.devices import DEVICE_FIELDS, DeviceInfo, Registry, device_key, parse_tags

__all__ = ["DEVICE_FIELDS", "DeviceInfo", "Registry", "device_key", "parse_tags"]
