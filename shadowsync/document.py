"""Shadow documents: recursive merge, metadata, delta and limits (PROTOCOL §1). Pure functions."""

from __future__ import annotations

from typing import Any

from daemons.protocol.codec import json_size
from daemons.protocol.errors import Rejected

SECTIONS = ("desired", "reported")
MAX_STATE_BYTES = 8 * 1024
MAX_DEPTH = 6
MAX_KEY_CHARS = 64


class ShadowError(Rejected):
    """A request the shadow rules refuse; `code` is the §0 error code."""


def clone(value: Any) -> Any:
    """A copy of a JSON-shaped value; much cheaper than copy.deepcopy on the hot path."""
    if isinstance(value, dict):
        return {k: clone(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clone(v) for v in value]
    return value


def empty_document() -> dict[str, Any]:
    return {"state": {}, "metadata": {}, "version": 0, "timestamp": 0}


def depth(value: Any) -> int:
    """`{"a": {"b": 1}}` has depth 2; a scalar or an array has depth 0."""
    if isinstance(value, dict) and value:
        return 1 + max(depth(v) for v in value.values())
    return 1 if isinstance(value, dict) else 0


def check_keys(value: Any, path: str = "") -> None:
    if isinstance(value, dict):
        for key, child in value.items():
            if not isinstance(key, str) or not key:
                raise ShadowError(400, f"invalid key at {path or 'state'}")
            if len(key) > MAX_KEY_CHARS:
                raise ShadowError(400, f"key longer than {MAX_KEY_CHARS} characters: {key[:16]}...")
            check_keys(child, f"{path}.{key}" if path else key)


def validate_state(state: Any) -> dict[str, Any]:
    """Check the `state` of an update request; return it when it can be merged."""
    if not isinstance(state, dict):
        raise ShadowError(400, "state must be an object")
    unknown = set(state) - set(SECTIONS)
    if unknown:
        raise ShadowError(400, f"state may hold only desired and reported, not {sorted(unknown)[0]!r}")
    if not state:
        raise ShadowError(400, "state must hold desired or reported")
    for section in SECTIONS:
        if section not in state:
            continue
        value = state[section]
        if value is not None and not isinstance(value, dict):
            raise ShadowError(400, f"state.{section} must be an object or null")
        if depth(value) > MAX_DEPTH:
            raise ShadowError(400, f"state.{section} is deeper than {MAX_DEPTH} levels")
        check_keys(value, section)
    if json_size(state) > MAX_STATE_BYTES:
        raise ShadowError(413, f"state larger than {MAX_STATE_BYTES} bytes")
    return state


def merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """Merge `patch` into `target` in place: objects recurse, null deletes, arrays are values.

    An object emptied by deletions is removed too, so no `{}` husks are left behind.
    """
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict):
            current = target.get(key)
            if not isinstance(current, dict):
                current = {}
                target[key] = current
            merge(current, value)
            if not current and value:
                del target[key]
        else:
            target[key] = clone(value)


def stamp(patch: dict[str, Any], timestamp: int) -> dict[str, Any]:
    """Metadata of a patch: its shape with `{"timestamp": T}` at every leaf written."""
    out: dict[str, Any] = {}
    for key, value in patch.items():
        if isinstance(value, dict) and value:
            out[key] = stamp(value, timestamp)
        else:
            out[key] = {"timestamp": timestamp}
    return out


def merge_metadata(target: dict[str, Any], patch: dict[str, Any], timestamp: int) -> None:
    """Keep metadata in the shape of the state after `merge(state, patch)`."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and value:
            current = target.get(key)
            if not isinstance(current, dict) or set(current) == {"timestamp"}:
                current = {}
                target[key] = current
            merge_metadata(current, value, timestamp)
            if not current:
                del target[key]
        else:
            target[key] = {"timestamp": timestamp}


def delta(desired: Any, reported: Any) -> dict[str, Any]:
    """Every field of desired whose value differs from reported, recursively for objects."""
    if not isinstance(desired, dict):
        return {}
    reported = reported if isinstance(reported, dict) else {}
    out: dict[str, Any] = {}
    for key, want in desired.items():
        if key not in reported:
            out[key] = want
            continue
        have = reported[key]
        if isinstance(want, dict) and isinstance(have, dict):
            sub = delta(want, have)
            if sub:
                out[key] = sub
        elif want != have or type(want) is not type(have):
            out[key] = want
    return out


def pick_metadata(metadata: Any, shape: Any) -> dict[str, Any]:
    """The metadata entries for the fields present in `shape` (used for the delta's metadata)."""
    if not isinstance(metadata, dict) or not isinstance(shape, dict):
        return {}
    out: dict[str, Any] = {}
    for key, value in shape.items():
        meta = metadata.get(key)
        if meta is None:
            continue
        if isinstance(value, dict) and value and isinstance(meta, dict) and "timestamp" not in meta:
            out[key] = pick_metadata(meta, value)
        else:
            out[key] = meta
    return out


def apply_update(document: dict[str, Any], state: dict[str, Any], timestamp: int) -> dict[str, Any]:
    """Return a new document with `state` merged in and the version bumped."""
    new = clone(document)
    doc_state = new.setdefault("state", {})
    doc_meta = new.setdefault("metadata", {})
    for section in SECTIONS:
        if section not in state:
            continue
        patch = state[section]
        if patch is None:
            doc_state.pop(section, None)
            doc_meta.pop(section, None)
            continue
        merge(doc_state.setdefault(section, {}), patch)
        merge_metadata(doc_meta.setdefault(section, {}), patch, timestamp)
    if json_size(doc_state) > MAX_STATE_BYTES:
        raise ShadowError(413, f"the document's state would exceed {MAX_STATE_BYTES} bytes")
    new["version"] = int(document.get("version", 0)) + 1
    new["timestamp"] = timestamp
    return new


def document_delta(document: dict[str, Any]) -> dict[str, Any]:
    state = document.get("state", {})
    return delta(state.get("desired"), state.get("reported"))


def public_document(document: dict[str, Any]) -> dict[str, Any]:
    """The document as `update/documents` shows it."""
    state = document.get("state", {})
    return {
        "state": {"desired": state.get("desired", {}), "reported": state.get("reported", {})},
        "metadata": document.get("metadata", {}),
        "version": document.get("version", 0),
        "timestamp": document.get("timestamp", 0),
    }


def get_body(document: dict[str, Any], last_seen_at: int, connected: bool, now: int) -> dict[str, Any]:
    """A stored document as `S/get/accepted` shows it (PROTOCOL §1): desired, reported, the delta
    (omitted when empty), metadata, version, timestamp, last_seen_at, connected."""
    state = document.get("state", {})
    body: dict[str, Any] = {
        "state": {"desired": state.get("desired", {}), "reported": state.get("reported", {})},
        "metadata": document.get("metadata", {}),
        "version": document["version"],
        "timestamp": now,
        "last_seen_at": last_seen_at,
        "connected": connected,
    }
    found = document_delta(document)
    if found:
        body["state"]["delta"] = found
    return body
