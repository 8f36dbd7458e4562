"""Fixtures for the host firmware end-to-end tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.firmware.device import (
    MASTER_KEY,
    Device,
    ImageServer,
    build_host,
    make_image,
    missing_build_tools,
)
from tests.firmware.tls import Pki, make_pki
from tests.support import Server


@pytest.fixture(scope="session")
def fw_binary() -> Path:
    reason = missing_build_tools()
    if reason:
        pytest.skip(f"host firmware cannot be built: {reason}")
    return build_host()


@pytest.fixture(scope="session")
def factory_image(fw_binary: Path, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return make_image(tmp_path_factory.mktemp("images"), "1.0.0", secure_version=1)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """The test CA every host device trusts, and the certificate of the local servers."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def image_server(pki: Pki) -> Iterator[ImageServer]:
    """Over HTTPS, as in production; `ImageServer()` without tls for a plain development store."""
    server = ImageServer(tls=pki.server_context()).start()
    yield server
    server.stop()


@pytest.fixture
def device(fw_binary: Path, factory_image: bytes, broker: Server, prefixes: tuple[str, str],
           tmp_path: Path, pki: Pki) -> Iterator[Callable[..., Device]]:
    """make(*extra_args, device_id=...) provisions a device with firmware 1.0.0 in ota_0 and boots it."""
    made: list[Device] = []

    def make(*extra: str, device_id: str | None = None, start: bool = True,
             master_key: bytes = MASTER_KEY, ca: Path | None = None) -> Device:
        did = device_id or f"dev-{prefixes[0]}-{len(made)}"
        d = Device(did, tmp_path / f"{did}.flash", broker.port, prefixes[0], extra=list(extra),
                   master_key=master_key, ca=ca or pki.ca)
        d.provision(factory_image)
        made.append(d)
        return d.start() if start else d

    yield make
    for d in made:
        d.kill()
