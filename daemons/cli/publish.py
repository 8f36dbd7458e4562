"""`fleetctl release publish`: straight to the artifact store and the planner, without the API.

    fleetctl release publish FILE --version V --hw H [--hw H2] [--secure-version N] [--notes T]
                             [--object NAME] [--timeout S] [--json]

hashes FILE, uploads it to the artifact store of the settings (FLEET_ARTIFACT_STORE, ...), then
registers the release on `{o}/ota/releases/register` (PROTOCOL §3) and waits for the planner's
answer. For CI pipelines that hold the store's credentials; `fleetctl releases publish` does the
same through the API with a token.
"""

from __future__ import annotations

import argparse
import json
import secrets
import threading
from pathlib import Path
from typing import Any

from daemons.cli.errors import REJECTED, UNREACHABLE, USAGE, CliError
from daemons.protocol.codec import CodecError, decode
from daemons.protocol.errors import ConfigError
from daemons.runtime.config import Settings


def upload(settings: Settings, name: str, path: Path, size: int) -> None:
    from otaplanner.artifacts import ArtifactError, store_from_settings

    try:
        store = store_from_settings(settings)
    except ConfigError as exc:
        raise CliError(USAGE, f"configuration: {exc}") from None
    try:
        store.put(name, path)
        stored = store.stat(name)
    except ArtifactError as exc:
        raise CliError(USAGE, str(exc)) from None
    except Exception as exc:  # minio, urllib3, OS errors: the store is not usable from here
        raise CliError(UNREACHABLE, f"artifact store {settings.artifact_store}: {exc}") from None
    if stored != size:
        raise CliError(UNREACHABLE, f"artifact store holds {stored} bytes for {name}, not {size}")


def register(settings: Settings, body: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Publish the registration and wait for its answer (matched by clientToken)."""
    from daemons.runtime.mqtt import client_for  # paho only for the commands that talk MQTT

    topic = f"{settings.ops_prefix}/ota/releases/register"
    token = body["clientToken"]
    answer: dict[str, Any] = {}
    got = threading.Event()
    subscribed = threading.Event()

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        try:
            payload, _ = decode(bytes(msg.payload))
        except CodecError:
            return
        if payload.get("clientToken") == token and not got.is_set():
            answer.update(topic=msg.topic, body=payload)
            got.set()

    client, addr = client_for(settings, f"fleetctl-{secrets.token_hex(4)}", clean_session=True)
    client.on_message = on_message
    client.on_subscribe = lambda *a: subscribed.set()
    host, port = addr.host, addr.port
    try:
        client.connect(host, port, keepalive=30)
    except OSError as exc:
        raise CliError(UNREACHABLE, f"MQTT broker {host}:{port} unreachable: {exc}") from None
    client.loop_start()
    try:
        client.subscribe([(f"{topic}/accepted", 1), (f"{topic}/rejected", 1)])
        if not subscribed.wait(10.0):
            raise CliError(UNREACHABLE, f"MQTT broker {host}:{port}: no answer to SUBSCRIBE")
        client.publish(topic, json.dumps(body), qos=1)
        if not got.wait(timeout):
            raise CliError(UNREACHABLE, f"no answer on {topic}/accepted or /rejected within {timeout:g} s "
                                        "(is ota-planner running?)")
    finally:
        client.disconnect()
        client.loop_stop()
    return answer


def publish(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from otaplanner.artifacts import release_object, sha256_file, valid_name

    path: Path = args.file
    if not path.is_file():
        raise CliError(USAGE, f"{path}: no such file")
    if not args.version.strip():
        raise CliError(USAGE, "--version must not be empty")
    if args.secure_version < 0:
        raise CliError(USAGE, "--secure-version must be >= 0")
    name = args.object or release_object(args.version, path.name)
    if not valid_name(name):
        raise CliError(USAGE, f"unusable object name {name!r} (letters, digits, _ . + - and /)")
    sha, size = sha256_file(path)
    release: dict[str, Any] = {"version": args.version, "hw": args.hw, "object": name, "sha256": sha,
                               "size": size, "secure_version": args.secure_version}
    if args.notes is not None:
        release["notes"] = args.notes
    upload(settings, name, path, size)
    answer = register(settings, {**release, "clientToken": secrets.token_hex(8)}, args.timeout)
    if answer["topic"].endswith("/rejected"):
        b = answer["body"]
        raise CliError(REJECTED, f"rejected ({b.get('code')}): {b.get('message')}", release=release,
                       rejection={"code": b.get("code"), "message": b.get("message")})
    return {"release": answer["body"].get("release", release)}
