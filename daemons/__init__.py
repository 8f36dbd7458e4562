"""Everything that is not a domain rule, in layers that point down only (docs/ARCHITECTURE.md).

- `daemons.protocol`: codecs, messages, topics, selectors, errors, key derivations (imports nothing of ours)
- `daemons.runtime`: settings, MQTT session, run loop, metrics, logs, process lifecycle
- `daemons.registry`: devices and their hw/fw/tag indexes
- `daemons.api`: the operator HTTP API, web console and remote-debug streams (`fleet-api`)
- applications: `daemons.sim` (simulated devices), `daemons.cli` (fleetctl, `fleet up`, the local stack)
"""
