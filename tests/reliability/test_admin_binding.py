"""The admin API and probes can listen on another address than the OpenAI API (VMS_ADMIN_HOST): an operator
publishes :8000 and keeps the admin port off the network. Shown on loopback with two addresses, 127.0.0.2 for
the admin API and 127.0.0.1 for the engine; the admin API listens long before the engine is ready."""

import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from integration.served import start, stop

pytestmark = pytest.mark.integration

LISTEN_BOUND_S = 60


def test_the_admin_api_listens_only_on_its_own_address(default_model_dir: Path, tmp_path: Path) -> None:
    served = start(tmp_path, {"VMS_ADMIN_HOST": "127.0.0.2"}, "--model", str(default_model_dir))
    try:
        deadline = time.monotonic() + LISTEN_BOUND_S
        while True:
            assert served.process.poll() is None, served.log_tail()
            try:
                assert httpx.get(served.admin_url + "/health/live", timeout=2).status_code == 200
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, f"the admin API never listened; log tail:\n{served.log_tail()}"
                time.sleep(0.2)
        admin_port = urlsplit(served.admin_url).port
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{admin_port}/health/live", timeout=2)
        assert f"admin API and probes on http://127.0.0.2:{admin_port}" in served.log.read_text()
    finally:
        stop(served)
