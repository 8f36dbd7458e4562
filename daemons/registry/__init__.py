"""The device registry: hw, fw and tags per device, and the indexes selectors are resolved with;
and how the stores pipeline their Lua scripts on one Redis or on Redis Cluster (slots)."""

from daemons.registry.devices import DEVICE_FIELDS, DeviceInfo, Registry, device_key, parse_tags
from daemons.registry.slots import ScriptCall, is_cluster, run_scripts, slot_pipeline

__all__ = ["DEVICE_FIELDS", "DeviceInfo", "Registry", "ScriptCall", "device_key", "is_cluster", "parse_tags",
           "run_scripts", "slot_pipeline"]
