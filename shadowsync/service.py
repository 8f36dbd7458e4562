"""shadow-sync's rules: typed requests (shadowsync.requests) and a store in, what to publish out.

PROTOCOL §1 and §4. A batch is routed per device; each device is read once, every request of
the batch applied to it in order, and written back with one compare-and-set (shadowsync.store).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import orjson

from daemons.protocol.codec import Encoding
from daemons.protocol.errors import Rejected
from daemons.protocol.messages import Inbound, Outcome, Reply, with_client_token
from daemons.registry import DeviceInfo, Registry
from daemons.runtime.logs import OncePerKey, get_logger
from shadowsync import document as doc
from shadowsync.requests import Bulk, Dropped, Presence, Read, Refusal, Request, Tags, Update, parse
from shadowsync.store import DeviceWrite, ShadowStore
from shadowsync.topics import Route, subscriptions

MAX_CAS_ROUNDS = 50
BULK_CHUNK = 500
# Per shadow, the clientTokens of the latest updates applied (with a digest of each request and the
# version it made): enough to cover the updates in flight when a crash or a broker restart has them
# redelivered, and bounded so a shadow's hash stays small.
TOKENS_KEPT = 16


class _Device:
    """One device's hash as read, with the writes a batch makes to it."""

    def __init__(self, device_id: str, fields: dict[str, str]) -> None:
        self.id = device_id
        self.fields = dict(fields)
        self.write = DeviceWrite(device_id, fields.get("rev", ""))
        self.info = DeviceInfo.from_fields(device_id, fields.get("hw"), fields.get("fw"), fields.get("tags"))
        self.new_hw: str | None = None
        self.new_fw: str | None = None

    def delta_pending(self) -> bool:
        """Whether any of the device's shadows has a non-empty delta."""
        return any(doc.document_delta(orjson.loads(v)) for k, v in self.fields.items()
                   if k.startswith("sh:") and v)

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
        """The device itself spoke (status, heartbeat, report): never for an operator's request."""
        self.set("last_seen_at", str(now))
        self.set("enc", encoding)

    @property
    def dirty(self) -> bool:
        return bool(self.write.sets or self.write.deletes)


@dataclass(frozen=True, slots=True)
class Call:
    """One request applied to one device in one compare-and-set round."""

    device: _Device
    now: int
    out: Outcome


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
        per_device: dict[str, list[Request]] = {}
        operator: list[Request] = []
        for message in batch:
            request = parse(message, self.prefix, self.ops)
            if isinstance(request, Dropped):
                kind = request.route.kind
                out.count("message", kind)
                if self._once.first(message.topic[:200]):
                    self.log.warning("dropped", reason=kind, topic=message.topic[:200])
            elif request.route.kind in ("bulk", "tags"):
                operator.append(request)
            else:
                per_device.setdefault(request.route.device_id, []).append(request)
        if per_device:
            out.extend(self._apply(per_device, self._device_requests))
        for request in operator:
            out.extend(self._operator(request))
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
        now = self.clock()

        def write(pipe: Any) -> None:
            for d in devices:
                # Index writes only when something indexed changes or the device is new.
                if d.new_hw or d.new_fw or not d.write.expected_rev:
                    self.registry.observe(pipe, d.info, d.new_hw, d.new_fw)
                seen, connected = d.write.sets.get("last_seen_at"), d.write.sets.get("connected")
                if seen is not None or connected is not None:
                    self.registry.presence(pipe, d.id, seen, connected)  # seen and connected indexes
                if any(k.startswith("sh:") for k in (*d.write.sets, *d.write.deletes)):
                    self.store.mark_delta(pipe, d.id, d.delta_pending(), now)
        return write

    # -- device topics -----------------------------------------------------------------------

    def _device_requests(self, device: _Device, requests: list[Request], now: int) -> Outcome:
        call = Call(device, now, Outcome())
        for request in requests:
            self._one(call, request)
        return call.out

    def _one(self, call: Call, request: Request) -> None:
        if isinstance(request, Presence):
            self._presence(call, request)
        elif isinstance(request, Refusal):
            if request.reply is None:  # a status or heartbeat this daemon cannot read: no answer topic
                call.out.count(request.route.kind, "too_large" if request.error.code == 413 else "malformed")
            else:
                self._reject(call, request.reply, request.error)
        elif isinstance(request, Update | Read):
            try:
                if isinstance(request, Update):
                    self._update(call, request)
                elif request.route.kind == "get":
                    self._get(call, request)
                else:
                    self._delete(call, request)
            except Rejected as exc:
                self._reject(call, request.reply, exc)

    @staticmethod
    def _reject(call: Call, reply: Reply, error: Rejected) -> None:
        replace(reply, now=call.now).reject(call.out, error)

    def _update(self, call: Call, request: Update) -> None:
        device, r, now, state = call.device, request.route, call.now, request.state
        if request.seq is not None and request.seq <= int(device.fields.get("seq", "-1")):
            raise doc.ShadowError(409, f"stale: seq {request.seq} is not above {device.fields.get('seq')}")
        digest = _digest(request)
        if digest is not None and request.redelivered and self._answer_again(call, request, digest):
            return
        current = device.shadow(r.shadow)
        previous = current or device.fresh_shadow(r.shadow)
        if request.version is not None and request.version != previous["version"]:
            raise doc.ShadowError(
                409, f"version conflict: expected {previous['version']}, got {request.version}")
        new = doc.apply_update(previous, state, now)
        device.set("sh:" + r.shadow, new)
        device.set("ver:" + r.shadow, str(new["version"]))
        if request.seq is not None:
            device.set("seq", str(request.seq))
        if digest is not None:
            tokens = _tokens(device, r.shadow)
            tokens.pop(str(request.reply.token), None)
            tokens[str(request.reply.token)] = [digest, new["version"]]
            device.set("tok:" + r.shadow, dict(list(tokens.items())[-TOKENS_KEPT:]))
        if request.reports:
            device.seen(now, request.reply.encoding)
        reply = request.reply
        reply.accept(call.out, {
            "state": state,
            "metadata": doc.stamp(state, now) if state is not None else {},
            "version": new["version"],
            "timestamp": now,
        })
        documents: dict[str, Any] = {"current": doc.public_document(new), "timestamp": now}
        if current is not None:
            documents["previous"] = doc.public_document(current)
        with_client_token(documents, reply.token)
        call.out.publish(f"{reply.topic}/documents", documents, reply.encoding)
        # Every update that carries desired sends the delta, changed or not (§1): re-sending the
        # same desired reaches a device that drifted locally.
        if state is not None and "desired" in state:
            self._publish_delta(device, r.shadow, new, now, call.out, reply.token)

    def _answer_again(self, call: Call, request: Update, digest: str) -> bool:
        """A redelivered update (DUP set, same clientToken, same request) is answered again, not
        applied again.

        QoS 1 means at least once: a crash, or a broker restart, between the Redis write and the
        PUBACK brings the request back (with DUP, MQTT 3.1.1 §3.3.1.1), and applying it again would
        bump the version a second time (and, for a device, deliver its delta twice). The answer
        repeats the version the update made. The same request sent again by its client (DUP clear)
        is a new update, applied as AWS IoT does.
        """
        device, r, state, reply = call.device, request.route, request.state, request.reply
        hit = _tokens(device, r.shadow).get(str(reply.token))
        if hit is None or hit[0] != digest:
            return False
        reply.accept(call.out, {
            "state": state,
            "metadata": doc.stamp(state, call.now) if state is not None else {},
            "version": hit[1],
            "timestamp": call.now,
        })
        current = device.shadow(r.shadow)
        if current is not None and state is not None and "desired" in state:
            self._publish_delta(device, r.shadow, current, call.now, call.out, reply.token)
        call.out.count("update", "redelivered")
        return True

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

    def _get(self, call: Call, request: Read) -> None:
        # An operator's get is not the device's activity (§1): last_seen_at and enc stay.
        device, r = call.device, request.route
        current = device.shadow(r.shadow)
        if current is None:
            raise doc.ShadowError(404, f"no shadow {r.shadow or '(classic)'} for {device.id}")
        seen = device.fields.get("last_seen_at")
        connected = device.fields.get("connected") == "1"
        # last_seen_at None: the device never spoke
        body = doc.get_body(current, int(seen) if seen else None, connected, call.now)
        request.reply.accept(call.out, body)

    def _delete(self, call: Call, request: Read) -> None:
        device, r = call.device, request.route
        current = device.shadow(r.shadow)
        if current is None:
            raise doc.ShadowError(404, f"no shadow {r.shadow or '(classic)'} for {device.id}")
        # The version counter survives the delete, as on AWS IoT: the next update continues it.
        device.delete("sh:" + r.shadow)
        request.reply.accept(call.out, {"version": current["version"], "timestamp": call.now})

    def _presence(self, call: Call, request: Presence) -> None:
        device, kind, body, out, now = call.device, request.route.kind, request.body, call.out, call.now
        if body is None:
            out.count(kind, "empty")  # a retained status being cleared
            return
        # `{"online": false}` is the Last Will: the broker's word after the device went, not a
        # message from it, so it moves neither last_seen_at nor the encoding.
        if not (kind == "status" and body.get("online") is False):
            device.seen(now, request.encoding)
        hw, fw = body.get("hw"), body.get("fw")
        if isinstance(hw, str) and 0 < len(hw) <= 64 and hw != device.info.hw:
            device.new_hw = hw
            device.set("hw", hw)
        if isinstance(fw, str) and 0 < len(fw) <= 64 and fw != device.info.fw:
            device.new_fw = fw
            device.set("fw", fw)
        out.count(kind, "seen")
        if kind != "status" or not isinstance(body.get("online"), bool):
            return
        online = body["online"]
        was_online = device.fields.get("connected") == "1"
        stamp = str(body.get("ts", ""))[:32]
        device.set("connected", "1" if online else "0")
        # A retained status redelivered to us is not a new connection; a new `ts` (every connect
        # sends a fresh one, §4) or a transition is. On a new connection the device gets every
        # non-empty delta.
        if online and (not was_online or stamp != device.fields.get("status_ts")):
            for name in [f[3:] for f in device.fields if f.startswith("sh:")]:
                current = device.shadow(name)
                if current is not None:
                    self._publish_delta(device, name, current, now, out)
        device.set("status_ts", stamp)

    # -- operator topics ---------------------------------------------------------------------

    def _operator(self, request: Request) -> Outcome:
        out = Outcome()
        if isinstance(request, Tags):
            old = self.registry.read_many([request.route.device_id])[request.route.device_id]
            pipe = self.store.redis.pipeline(transaction=False)
            self.registry.set_tags(pipe, old, request.tags)
            pipe.execute()
            out.count("tags", "accepted")
        elif isinstance(request, Bulk):
            self._bulk(request, out)
        elif not isinstance(request, Refusal):
            raise TypeError(f"not an operator request: {request!r}")
        elif request.reply is None:  # tags: a retained topic, nobody to answer
            out.count("tags", "rejected")
            self.log.warning("tags_rejected", device_id=request.route.device_id, error=request.error.message)
        else:
            replace(request.reply, now=int(self.clock())).reject(out, request.error)
        return out

    def _bulk(self, request: Bulk, out: Outcome) -> None:
        now = int(self.clock())
        matched = self.registry.select(request.selector)
        for start in range(0, len(matched), BULK_CHUNK):
            chunk = {i: request.state for i in matched[start:start + BULK_CHUNK]}
            out.extend(self._apply(chunk, self._bulk_one))
        request.reply.accept(out, {"matched": len(matched), "timestamp": now})

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
            # Already applied (a redelivered bulk request): nothing is stored again, but the delta
            # still goes out, as for any update that carries desired (§1).
            self._publish_delta(device, "", current, now, out)
            return out
        device.set("sh:", new)
        device.set("ver:", str(new["version"]))
        documents: dict[str, Any] = {"current": doc.public_document(new), "timestamp": now}
        if current is not None:
            documents["previous"] = doc.public_document(current)
        out.publish(f"{self.prefix}/{device.id}/shadow/update/documents", documents)
        self._publish_delta(device, "", new, now, out)
        out.count("bulk_device", "accepted")
        return out


def _digest(request: Update) -> str | None:
    """What identifies a request for `_answer_again`: None when it cannot be told from a new one (no
    clientToken) or needs no help (a device's report with `seq`: a redelivery is stale already)."""
    if request.reply.token is None or request.seq is not None:
        return None
    body = orjson.dumps([request.state, request.version], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(body).hexdigest()[:16]


def _tokens(device: _Device, shadow: str) -> dict[str, list[Any]]:
    """clientToken -> [digest, version] of the latest updates applied to one shadow, oldest first."""
    raw = device.fields.get("tok:" + shadow)
    return dict(orjson.loads(raw)) if raw else {}
