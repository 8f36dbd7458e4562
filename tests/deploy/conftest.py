from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.deploy.live import run_fleet
from tests.support import Server


@pytest.fixture(scope="module")
def live_metrics(redis_server: Server, broker: Server,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """daemon -> its /metrics text, scraped from every daemon running with some traffic."""
    yield from run_fleet(redis_server, broker, tmp_path_factory.mktemp("fleet"))
