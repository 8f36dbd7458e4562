"""A local artifact store served over real HTTP on a free port, for the OTA part-A tests."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from otaplanner.artifact_http import serve_local_store
from otaplanner.artifacts import LocalStore

URL_KEY = bytes(range(32))


@dataclass
class Served:
    store: LocalStore
    root: Path

    def add(self, name: str, data: bytes) -> tuple[str, int]:
        src = self.root.parent / f"src-{name.replace('/', '_')}"
        src.write_bytes(data)
        self.store.put(name, src)
        return hashlib.sha256(data).hexdigest(), len(data)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    root = tmp_path / "store"
    root.mkdir()
    store = LocalStore(root, "http://unset", URL_KEY)
    server, thread = serve_local_store(store, "127.0.0.1", 0)
    store.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    yield Served(store, root)
    server.shutdown()
    server.server_close()
    thread.join(5)
