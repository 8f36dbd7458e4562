"""shadow-sync's rules: decoded messages and a store in, what to publish out (PROTOCOL §1)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from daemons.protocol.codec import CodecError, Encoding, decode
from daemons.protocol.messages import Inbound, Outcome, client_token_of, error_body, with_client_token
from daemons.protocol.selector import parse_selector
from daemons.registry import DeviceInfo, Registry, parse_tags
from daemons.runtime.logs import OncePerKey, get_logger
from shadowsync import document as doc
from shadowsync.store import DeviceWrite, ShadowStore
from shadowsync.topics import Route, route, subscriptions

MAX_PAYLOAD = 64 * 1024
MAX_CAS_ROUNDS = 50
BULK_CHUNK = 500


class _Device:
    """One device's hash as read, with the writes a batch makes to it."""

    def __init__(self, device_id: str, fields: dict[str, str]) -> None:
        self.id = device_id
        self.fields = dict(fields)
        self.write = DeviceWrite(device_id, fields.get("rev", ""))
        self.info = DeviceInfo.from_fields(device_id, fields.get("hw"), fields.get("fw"), fields.get("tags"))
        self.new_hw: str | None = None
        self.new_fw: str | None = None

    def set(self, name: str, value: Any) -> None:
        text = value if isinstance(value, str) else orjson.dumps(value).decode()
        self.fields[name] = text
        self.write.sets[name] = text
        self.write.deletes.discard(name)

    def delete(self, name: str) -> None:
        self.fields.pop(name, None)
        self.write.sets.pop(name, None)
        self.write.deletes.add(name)

    def shadow(self, name: str) -> dict[str, Any] | None:
        raw = self.fields.get("sh:" + name)
        return orjson.loads(raw) if raw else None

    def fresh_shadow(self, name: str) -> dict[str, Any]:
        """An empty document that continues the version of a deleted one."""
        return {**doc.empty_document(), "version": int(self.fields.get("ver:" + name, 0))}

    def encoding(self) -> Encoding:
        return "msgpack" if self.fields.get("enc") == "msgpack" else "json"

    def seen(self, now: int, encoding: Encoding) -> None:
        self.set("last_seen_at", str(now))
        self.set("enc", encoding)

    @property
    def dirty(self) -> bool:
        return bool(self.write.sets or self.write.deletes)


def _int_field(request: dict[str, Any], name: str) -> int | None:
    value = request.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise doc.ShadowError(400, f"{name} must be a non-negative integer")
    return value


class ShadowService:
    tick_interval_s = 3600.0

    def __init__(
        self,
        store: ShadowStore,
        registry: Registry,
        prefix: str = "fleet",
        ops_prefix: str = "fleetops",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.registry = registry
        self.prefix = prefix
        self.ops = ops_prefix
        self.clock = clock
        self.log = get_logger("shadowsync")
        self._once = OncePerKey()

    def topics(self) -> list[str]:
        return subscriptions(self.prefix, self.ops)

    def tick(self, now: float) -> Outcome:
        return Outcome()

    # -- batch -----------------------------------------------------------------------------

    def handle(self, batch: list[Inbound]) -> Outcome:
        out = Outcome()
        per_device: dict[str, list[tuple[Route, Inbound]]] = {}
        operator: list[tuple[Route, Inbound]] = []
        for message in batch:
            r = route(message.topic, self.prefix, self.ops)
            if r.kind in ("bad_id", "unknown"):
                out.count("message", r.kind)
                if self._once.first(message.topic[:200]):
                    self.log.warning("dropped", reason=r.kind, topic=message.topic[:200])
            elif r.kind in ("bulk", "tags"):
                operator.append((r, message))
            else:
                per_device.setdefault(r.device_id, []).append((r, message))
        if per_device:
            out.extend(self._apply(per_device, self._device_messages))
        for r, message in operator:
            out.extend(self._tags(r, message) if r.kind == "tags" else self._bulk(message))
        return out

    def _apply(
        self,
        work: dict[str, Any],
        compute: Callable[[_Device, Any, int], Outcome],
    ) -> Outcome:
        """Read, compute and CAS-write every device in `work`; recompute the ones that raced."""
        out = Outcome()
        pending = dict(work)
        for _ in range(MAX_CAS_ROUNDS):
            if not pending:
                return out
            now = int(self.clock())
            states = self.store.read(pending)
            devices = {i: _Device(i, states[i]) for i in pending}
            results = {i: compute(devices[i], pending[i], now) for i in pending}
            dirty = [d for d in devices.values() if d.dirty]
            applied = self.store.commit([d.write for d in dirty], extra=self._index_writer(dirty))
            raced = {d.id for d, ok in zip(dirty, applied, strict=True) if not ok}
            for device_id, result in results.items():
                if device_id not in raced:
                    out.extend(result)
            pending = {i: pending[i] for i in raced}
        raise RuntimeError(f"shadow write kept racing for {len(pending)} devices")

    def _index_writer(self, devices: list[_Device]) -> Callable[[Any], None]:
        def write(pipe: Any) -> None:
            for d in devices:
                # Index writes only when something indexed changes or the device is new.
                if d.new_hw or d.new_fw or not d.write.expected_rev:
                    self.registry.observe(pipe, d.info, d.new_hw, d.new_fw)
                seen, connected = d.write.sets.get("last_seen_at"), d.write.sets.get("connected")
                if seen is not None or connected is not None:
                    self.registry.presence(pipe, d.id, seen, connected)
        return write

    # -- device topics -----------------------------------------------------------------------

    def _device_messages(self, device: _Device, messages: list[tuple[Route, Inbound]], now: int) -> Outcome:
        out = Outcome()
        for r, message in messages:
            out.extend(self._one(device, r, message, now))
        return out

    def _one(self, device: _Device, r: Route, message: Inbound, now: int) -> Outcome:
        out = Outcome()
        if r.kind in ("status", "heartbeat"):
            self._presence(device, r.kind, message.payload, now, out)
            return out
        base = r.base(self.prefix)
        reply_to = f"{base}/{r.operation}"
        encoding: Encoding = "json"
        token: str | None = None
        try:
            if len(message.payload) > MAX_PAYLOAD:
                raise doc.ShadowError(413, f"payload larger than {MAX_PAYLOAD} bytes")
            empty: dict[str, Any] | None = {} if r.operation in ("get", "delete") else None
            request, encoding = decode(message.payload, empty_as=empty)
            token = client_token_of(request)
            if "clientToken" in request and token is None:
                raise doc.ShadowError(400, "clientToken must be a string of at most 64 characters")
            if r.kind == "bad_name":
                raise doc.ShadowError(400, "shadow name must match ^[A-Za-z0-9_-]{1,64}$")
            if r.kind == "update":
                self._update(device, r, request, encoding, token, now, out)
            elif r.kind == "get":
                self._get(device, r, encoding, token, now, out)
            else:
                self._delete(device, r, encoding, token, now, out)
        except (CodecError, doc.ShadowError) as exc:
            code = exc.code
            out.publish(f"{reply_to}/rejected", error_body(code, exc.message, token, now), encoding)
            out.count(r.operation, f"rejected_{code}")
        return out

    def _update(
        self, device: _Device, r: Route, request: dict[str, Any], encoding: Encoding,
        token: str | None, now: int, out: Outcome,
    ) -> None:
        state = doc.validate_state(request.get("state"))
        version = _int_field(request, "version")
        seq = _int_field(request, "seq")
        if seq is not None and seq <= int(device.fields.get("seq", "-1")):
            raise doc.ShadowError(409, f"stale: seq {seq} is not above {device.fields.get('seq')}")
        current = device.shadow(r.shadow)
        previous = current or device.fresh_shadow(r.shadow)
        if version is not None and version != previous["version"]:
            raise doc.ShadowError(409, f"version conflict: expected {previous['version']}, got {version}")
        new = doc.apply_update(previous, state, now)
        device.set("sh:" + r.shadow, new)
        device.set("ver:" + r.shadow, str(new["version"]))
        if seq is not None:
            device.set("seq", str(seq))
        if "reported" in state:
            device.seen(now, encoding)
        base = r.base(self.prefix)
        accepted: dict[str, Any] = {
            "state": state,
            "metadata": doc.stamp(state, now),
            "version": new["version"],
            "timestamp": now,
        }
        with_client_token(accepted, token)
        out.publish(f"{base}/update/accepted", accepted, encoding)
        documents: dict[str, Any] = {"current": doc.public_document(new), "timestamp": now}
        if current is not None:
            documents["previous"] = doc.public_document(current)
        with_client_token(documents, token)
        out.publish(f"{base}/update/documents", documents, encoding)
        before = previous.get("state", {}).get("desired")
        after = new["state"].get("desired")
        if before != after:
            self._publish_delta(device, r.shadow, new, now, out, token)
        out.count("update", "accepted")

    def _publish_delta(
        self, device: _Device, shadow: str, document: dict[str, Any], now: int, out: Outcome,
        token: str | None = None,
    ) -> bool:
        delta = doc.document_delta(document)
        if not delta:
            return False
        body: dict[str, Any] = {
            "state": delta,
            "metadata": doc.pick_metadata(document.get("metadata", {}).get("desired"), delta),
            "version": document["version"],
            "timestamp": now,
        }
        with_client_token(body, token)
        # A delta is started by the daemon: it goes in the encoding the device last used.
        out.publish(f"{Route('update', device.id, shadow).base(self.prefix)}/update/delta",
                    body, device.encoding())
        out.count("delta", "published")
        return True

    def _get(self, device: _Device, r: Route, encoding: Encoding, token: str | None, now: int,
             out: Outcome) -> None:
        current = device.shadow(r.shadow)
        device.seen(now, encoding)
        if current is None:
            raise doc.ShadowError(404, f"no shadow {r.shadow or '(classic)'} for {device.id}")
        connected = device.fields.get("connected") == "1"
        body = doc.get_body(current, int(device.fields["last_seen_at"]), connected, now)
        with_client_token(body, token)
        out.publish(f"{r.base(self.prefix)}/get/accepted", body, encoding)
        out.count("get", "accepted")

    def _delete(self, device: _Device, r: Route, encoding: Encoding, token: str | None, now: int,
                out: Outcome) -> None:
        current = device.shadow(r.shadow)
        if current is None:
            raise doc.ShadowError(404, f"no shadow {r.shadow or '(classic)'} for {device.id}")
        # The version counter survives the delete, as on AWS IoT: the next update continues it.
        device.delete("sh:" + r.shadow)
        body: dict[str, Any] = {"version": current["version"], "timestamp": now}
        with_client_token(body, token)
        out.publish(f"{r.base(self.prefix)}/delete/accepted", body, encoding)
        out.count("delete", "accepted")

    def _presence(self, device: _Device, kind: str, payload: bytes, now: int, out: Outcome) -> None:
        if not payload:
            out.count(kind, "empty")  # a retained status being cleared
            return
        try:
            body, encoding = decode(payload)
        except CodecError:
            out.count(kind, "malformed")
            return
        device.seen(now, encoding)
        hw, fw = body.get("hw"), body.get("fw")
        if isinstance(hw, str) and hw and hw != device.info.hw:
            device.new_hw = hw
            device.set("hw", hw)
        if isinstance(fw, str) and fw and fw != device.info.fw:
            device.new_fw = fw
            device.set("fw", fw)
        out.count(kind, "seen")
        if kind != "status" or not isinstance(body.get("online"), bool):
            return
        online = body["online"]
        was_online = device.fields.get("connected") == "1"
        stamp = str(body.get("ts", ""))
        device.set("connected", "1" if online else "0")
        # A retained status redelivered to us is not a new connection; a new `ts` or a
        # transition is. On a new connection the device gets every non-empty delta.
        if online and (not was_online or stamp != device.fields.get("status_ts")):
            for name in [f[3:] for f in device.fields if f.startswith("sh:")]:
                current = device.shadow(name)
                if current is not None:
                    self._publish_delta(device, name, current, now, out)
        device.set("status_ts", stamp)

    # -- operator topics ---------------------------------------------------------------------

    def _tags(self, r: Route, message: Inbound) -> Outcome:
        out = Outcome()
        tags: dict[str, str] = {}
        if message.payload:
            try:
                body, _ = decode(message.payload)
                tags = parse_tags(body)
            except (CodecError, ValueError) as exc:
                out.count("tags", "rejected")
                self.log.warning("tags_rejected", device_id=r.device_id, error=str(exc))
                return out
        old = self.registry.read_many([r.device_id])[r.device_id]
        pipe = self.store.redis.pipeline(transaction=False)
        self.registry.set_tags(pipe, old, tags)
        pipe.execute()
        out.count("tags", "accepted")
        return out

    def _bulk(self, message: Inbound) -> Outcome:
        out = Outcome()
        reply = f"{self.ops}/shadow/bulk"
        token: str | None = None
        now = int(self.clock())
        try:
            request, _ = decode(message.payload)
            token = client_token_of(request)
            selector = parse_selector(request.get("selector"))
            state = request.get("state")
            if not isinstance(state, dict) or set(state) != {"desired"} or not isinstance(
                    state["desired"], dict):
                raise doc.ShadowError(400, "state must be {\"desired\": {...}}")
            doc.validate_state(state)
        except (CodecError, doc.ShadowError) as exc:
            out.publish(f"{reply}/rejected", error_body(exc.code, exc.message, token, now))
            out.count("bulk", f"rejected_{exc.code}")
            return out
        except ValueError as exc:
            out.publish(f"{reply}/rejected", error_body(400, str(exc), token, now))
            out.count("bulk", "rejected_400")
            return out
        matched = self.registry.select(selector)
        for start in range(0, len(matched), BULK_CHUNK):
            chunk = {i: state for i in matched[start:start + BULK_CHUNK]}
            out.extend(self._apply(chunk, self._bulk_one))
        body: dict[str, Any] = {"matched": len(matched), "timestamp": now}
        with_client_token(body, token)
        out.publish(f"{reply}/accepted", body)
        out.count("bulk", "accepted")
        return out

    def _bulk_one(self, device: _Device, state: dict[str, Any], now: int) -> Outcome:
        out = Outcome()
        current = device.shadow("")
        previous = current or device.fresh_shadow("")
        try:
            new = doc.apply_update(previous, state, now)
        except doc.ShadowError:
            out.count("bulk_device", "rejected_413")
            return out
        if current is not None and new["state"].get("desired") == current["state"].get("desired"):
            return out  # already applied: a redelivered bulk request changes nothing
        device.set("sh:", new)
        device.set("ver:", str(new["version"]))
        documents: dict[str, Any] = {"current": doc.public_document(new), "timestamp": now}
        if current is not None:
            documents["previous"] = doc.public_document(current)
        out.publish(f"{self.prefix}/{device.id}/shadow/update/documents", documents)
        self._publish_delta(device, "", new, now, out)
        out.count("bulk_device", "accepted")
        return out
