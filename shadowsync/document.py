"""Shadow documents: recursive merge, metadata, delta and limits (PROTOCOL §1). Pure functions.

The rules, and where each comes from. AWS IoT Developer Guide, "Device Shadow service documents":
"Request state document" (`state` with `desired` / `reported`, `clientToken`, `version`),
"Delta state" (desired fields that differ from reported, recursively), "Array values in shadow
documents" (arrays are values, replaced and compared whole); "Interacting with shadows" >
"Deleting properties" (null deletes a field, `"desired": null` the section). PROTOCOL §1 (the
contract, written from AWS IoT's observed behaviour, which those pages do not spell out):

- `state` may be null: the whole state (desired and reported) is cleared; `{}` changes nothing;
  either way the update is accepted and the version moves on by one. A missing `state`, or one
  that is not an object or null, is refused (400), as AWS refuses "Missing required node: state".
- null deletes at every level: `"desired": null` drops the section, `{"a": null}` the field.
- An object emptied by deletions stays, as an empty object (AWS keeps `{"a": {}}`).
- Limits: depth ≤ 6 inside a section, arrays counting as a level like objects, keys ≤ 64
  characters (400); the state ≤ 8 KiB as JSON (413). Checked without recursion, before anything
  is merged, so nothing of a refused request is stored.
"""

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
    """`{"a": {"b": 1}}` has depth 2, `{"a": [1]}` too (an array is a level); a scalar has depth 0."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children)
    return deepest


def check_section(value: Any, section: str) -> None:
    """Depth and key limits of one section, objects inside arrays included; raises ShadowError(400)."""
    stack: list[tuple[Any, int, str]] = [(value, 1, section)]
    while stack:
        item, level, path = stack.pop()
        if isinstance(item, dict):
            pairs: Any = item.items()
        elif isinstance(item, list):
            pairs = ((f"[{i}]", child) for i, child in enumerate(item))
        else:
            continue
        if level > MAX_DEPTH:
            raise ShadowError(400, f"state.{section} is deeper than {MAX_DEPTH} levels")
        for key, child in pairs:
            if isinstance(item, dict):
                if not isinstance(key, str) or not key:
                    raise ShadowError(400, f"invalid key at {path}")
                if len(key) > MAX_KEY_CHARS:
                    raise ShadowError(400, f"key longer than {MAX_KEY_CHARS} characters: {key[:16]}...")
            stack.append((child, level + 1, f"{path}.{key}"))


MISSING = object()


def validate_state(state: Any = MISSING) -> dict[str, Any] | None:
    """Check the `state` of an update request; return it (None for a null state) when it can be merged.

    Raises ShadowError: 400 when `state` is missing, not an object or null, holds anything but
    `desired` / `reported` (each an object or null), or breaks the depth or key limits; 413 when
    it is larger than MAX_STATE_BYTES as JSON.
    """
    if state is MISSING:
        raise ShadowError(400, "missing required node: state")
    if state is None:
        return None
    if not isinstance(state, dict):
        raise ShadowError(400, "state must be an object or null")
    unknown = set(state) - set(SECTIONS)
    if unknown:
        raise ShadowError(400, f"state may hold only desired and reported, not {sorted(unknown)[0]!r}")
    for section in SECTIONS:
        if section not in state:
            continue
        value = state[section]
        if value is not None and not isinstance(value, dict):
            raise ShadowError(400, f"state.{section} must be an object or null")
        check_section(value, section)
    if json_size(state) > MAX_STATE_BYTES:
        raise ShadowError(413, f"state larger than {MAX_STATE_BYTES} bytes")
    return state


def merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """Merge `patch` into `target` in place: objects recurse, null deletes, arrays are values.

    An object emptied by deletions stays as `{}`, as on AWS IoT.
    """
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict):
            existing = target.get(key)
            created = not isinstance(existing, dict)
            current: dict[str, Any] = existing if isinstance(existing, dict) else {}
            merge(current, value)
            # Deleting inside an object that is not there creates nothing.
            if not created or current or not value:
                target[key] = current
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


def merge_metadata(target: dict[str, Any], patch: dict[str, Any], timestamp: int,
                   state: dict[str, Any]) -> None:
    """Keep metadata in the shape of `state`, the section as it is after `merge(section, patch)`."""
    for key, value in patch.items():
        if key not in state:
            target.pop(key, None)
            continue
        now = state[key]
        if isinstance(value, dict) and value and isinstance(now, dict) and now:
            current = target.get(key)
            if not isinstance(current, dict) or set(current) == {"timestamp"}:
                current = {}
                target[key] = current
            merge_metadata(current, value, timestamp, now)
        else:
            # A leaf written now, or an object emptied now: `{}` is a value, like on AWS IoT.
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


def apply_update(document: dict[str, Any], state: dict[str, Any] | None, timestamp: int) -> dict[str, Any]:
    """Return a new document with `state` merged in and the version bumped; a None state clears it.

    Raises ShadowError(413) when the merged state would exceed MAX_STATE_BYTES.
    """
    new = clone(document)
    if state is None:
        new["state"], new["metadata"] = {}, {}
        state = {}
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
        merge_metadata(doc_meta.setdefault(section, {}), patch, timestamp, doc_state[section])
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


def get_body(document: dict[str, Any], last_seen_at: int | None, connected: bool, now: int) -> dict[str, Any]:
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
