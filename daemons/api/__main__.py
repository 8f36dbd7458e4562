"""`python -m daemons.api` / `fleet-api`: the operator API and console on uvicorn.

Reads the daemons' settings (TOML named by --config or FLEET_CONFIG, then FLEET_* variables) and
listens on FLEET_API_HOST:FLEET_API_PORT (default 127.0.0.1:8080).
"""

from __future__ import annotations

import argparse
import signal
import sys

import uvicorn

from daemons.protocol.errors import FleetError
from daemons.runtime import logs
from daemons.runtime.config import load_settings
from daemons.runtime.prefixes import check_prefixes
from daemons.runtime.redisclient import connect_redis


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fleet-api", description=__doc__)
    parser.add_argument("--config", help="TOML configuration file (default: $FLEET_CONFIG)")
    args = parser.parse_args(argv)
    try:
        settings = load_settings("api", args.config)
    except FleetError as exc:
        print(f"fleet-api: configuration error: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level)
    from daemons.api.app import create_app

    try:  # a broker that cannot carry `$` prefixes is refused at start, naming the variable
        check_prefixes(settings.mqtt_url, settings.topic_prefix, settings.ops_prefix, settings.mqtt_username,
                       settings.mqtt_password)
    except FleetError as exc:
        print(f"fleet-api: {exc}", file=sys.stderr)
        return 2
    redis = connect_redis(settings)
    try:
        app = create_app(settings, redis)
    except FleetError as exc:
        print(f"fleet-api: {exc}", file=sys.stderr)
        return 2
    # uvicorn handles SIGTERM/SIGINT itself (graceful shutdown, then the lifespan's cleanup) and
    # then raises the signal again for the handler it found: a no-op one makes that exit 0, as the
    # daemons do on SIGTERM.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    config = uvicorn.Config(app, host=settings.api_host, port=settings.api_port, log_level="warning",
                            access_log=False, ws="websockets-sansio", lifespan="on")
    server = uvicorn.Server(config)
    try:
        server.run()
    finally:
        redis.close()
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
