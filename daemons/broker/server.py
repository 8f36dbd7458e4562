"""`fleet broker` / `fleet-broker` / `python -m daemons.broker`: the embedded broker on its own.

    fleet broker [--config FILE] [--host H] [--port N]

Configured like the daemons (TOML file, then FLEET_* variables): FLEET_SECRET (required: the devices'
passwords derive from it), FLEET_BROKER_PASSWD_FILE (accounts of daemons and operators, mosquitto
password file format), FLEET_BROKER_ACL_FILE (default: the shipped mosquitto/acl.conf),
FLEET_TOPIC_PREFIX/FLEET_OPS_PREFIX. It listens on the host and port of FLEET_MQTT_URL unless --host or
--port say otherwise (--port 0: any free port, printed in the `started` line). MQTT 3.1.1 over TCP.
Exit codes: 0 stopped by SIGTERM/SIGINT, 2 configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import sys
from typing import Any
from urllib.parse import urlparse

from daemons.broker.core import FleetBroker
from daemons.protocol.acl import AclError, load_acl
from daemons.protocol.errors import ConfigError
from daemons.protocol.passwd import PasswdError, read_passwd
from daemons.runtime import logs
from daemons.runtime.config import Settings, load_settings
from daemons.runtime.notify import Notifier

PLUGIN = "daemons.broker.plugin.FleetPlugin"


def broker_config(settings: Settings, host: str, port: int) -> dict[str, Any]:
    """amqtt's configuration: one TCP listener and the fleet plugin alone (no anonymous access).

    Raises ConfigError when the secret is missing or the ACL or password file cannot be read.
    """
    if not settings.secret:
        raise ConfigError("FLEET_SECRET (secret): required by the broker (hex, >= 16 bytes)")
    try:
        load_acl(settings.broker_acl_file)
        if settings.broker_passwd_file:
            read_passwd(settings.broker_passwd_file)
    except (AclError, PasswdError) as exc:
        raise ConfigError(str(exc)) from None
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": {PLUGIN: {
            "secret": settings.secret, "passwd_file": settings.broker_passwd_file,
            "acl_file": settings.broker_acl_file, "topic_prefix": settings.topic_prefix,
            "ops_prefix": settings.ops_prefix,
        }},
    }


async def serve(config: dict[str, Any], host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    broker = FleetBroker(config)
    await broker.start()
    log = logs.get_logger("broker")
    log.info("started", listen=f"{host}:{port}", url=f"mqtt://{host}:{port}")
    notifier = Notifier()
    notifier.ready()  # systemd Type=notify, `fleet up` and the tests wait for this
    watchdog = asyncio.create_task(_ping(notifier, stop))
    try:
        await stop.wait()
    finally:
        notifier.stopping()
        watchdog.cancel()
        await broker.shutdown()
        notifier.close()
        log.info("stopped")


async def _ping(notifier: Notifier, stop: asyncio.Event) -> None:
    """WATCHDOG=1 while the event loop turns (Notifier sends at most once per half period)."""
    while not stop.is_set():
        notifier.watchdog()
        await asyncio.sleep(1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fleet broker", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="TOML configuration file (default: $FLEET_CONFIG)")
    parser.add_argument("--host", help="address to listen on (default: the host of FLEET_MQTT_URL)")
    parser.add_argument("--port", type=int, help="port to listen on (default: the port of FLEET_MQTT_URL)")
    args = parser.parse_args(argv)
    try:
        settings = load_settings("broker", args.config)
        url = urlparse(settings.mqtt_url)
        if url.scheme != "mqtt":
            raise ConfigError("FLEET_MQTT_URL (mqtt_url): the embedded broker speaks mqtt:// (no TLS)")
        host = args.host or url.hostname or "127.0.0.1"
        port = (url.port or 1883) if args.port is None else args.port
        if port == 0:
            with socket.socket() as s:
                s.bind((host, 0))
                port = int(s.getsockname()[1])
        config = broker_config(settings, host, port)
    except ConfigError as exc:
        print(f"fleet broker: configuration error: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level)
    # amqtt logs every connection at INFO; its warnings are enough next to our JSON lines.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("daemons.broker").setLevel(getattr(logging, settings.log_level.upper(), logging.INFO))
    asyncio.run(serve(config, host, port))
    return 0
