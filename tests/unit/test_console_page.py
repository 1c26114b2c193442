"""The console page in headless Chromium over the real admin app, its operator held in memory (real state machine)
and the probe reading a fake A3 host: two chips of four unhealthy. Fast, and beside the served run's browser test
(tests/integration/test_console.py), not instead of it."""

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from console_browser import console
from pydantic import SecretStr
from unit.test_admin_api import TOKEN, InMemoryOperator
from unit.test_doctor import fake_ascend_host

from vms_admin.app import create_app
from vms_admin.console import SECURITY_HEADERS


class FakeHostOperator(InMemoryOperator):
    def __init__(self, host: dict) -> None:
        super().__init__(TOKEN)
        self.host = host

    def devices(self) -> dict:
        return {"device": "ascend", **self.host}

    def status(self) -> dict:
        return {**super().status(), "model": "Qwen3-tiny", "device": "ascend", "engine_pid": 4242, "history": []}


@pytest.fixture
def admin_url(tmp_path, monkeypatch, unused_port) -> Iterator[tuple[str, FakeHostOperator]]:
    host, _ = fake_ascend_host(tmp_path, monkeypatch, "a3_ascend910_phy_id_one_alarm.txt")
    operator = FakeHostOperator(host.to_json())
    operator.become_ready()
    server = uvicorn.Server(uvicorn.Config(create_app(operator), host="127.0.0.1", port=unused_port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{unused_port}", operator
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def unused_port() -> int:
    from integration.served import free_port

    return free_port()


def test_the_page_and_its_files_are_served_with_a_strict_policy(admin_url) -> None:
    url, _ = admin_url
    for path in ("/", "/console/console.js", "/console/console.css"):
        response = httpx.get(url + path)
        assert response.status_code == 200 and response.headers["content-security-policy"].startswith(
            "default-src 'none'"
        )
        assert {name.lower(): value for name, value in SECURITY_HEADERS.items()}.items() <= response.headers.items()
    assert httpx.get(url + "/console/secrets.txt").status_code == 404


def test_chips_of_a_fake_host_with_their_health_and_a_confirmed_stop(admin_url) -> None:
    url, operator = admin_url
    with console(url) as page:
        page.log_in(TOKEN)
        page.wait_text("#state", "^ready$")
        rows = page.wait_text("#npu-table tbody", "Alarm").splitlines()
        assert [row.split("\t")[:4] for row in rows] == [
            ["0", "0", "Ascend910", "OK"],
            ["0", "1", "Ascend910", "OK"],
            ["1", "0", "Ascend910", "Warning"],
            ["1", "1", "Ascend910", "Alarm"],
        ]
        assert rows[3].split("\t")[4:] == ["2870 / 65536", "71", "\u2013"]  # the second chip of a card has no power
        marked = page.page.eval_on_selector_all("#npu-table td.unhealthy", "cells => cells.map(c => c.textContent)")
        assert marked == ["Warning", "Alarm"]
        assert "Serving on Ascend" in page.text("#npu-note") and "CANN 8.1.RC1" in page.text("#npu-note")
        page.shot("fake-a3-host")
        page.page.wait_for_function("() => Number(document.getElementById('chart-requests').dataset.samples) >= 2")
        # the fake engine relays only vllm:num_requests_running 0: a flat line there, nothing on the others
        assert page.line_pixels("chart-requests") > 10 and page.line_pixels("chart-tokens") == 0

        page.confirm("stop")
        page.wait_text("#action-result", "^stop done at")
        assert operator.actions == ["stop"]

        page.page.click("#logout")
        assert page.page.is_visible("#login-view") and page.page.evaluate("sessionStorage.length") == 0
        page.page.reload()  # a new load of the tab: still logged out, nothing kept
        assert page.page.is_visible("#login-view") and page.page.is_hidden("#console-view")
        assert page.other_hosts() == [] and page.console_errors == []
        assert TOKEN not in page.page.content() and not [u for u in page.requests if TOKEN in u]


def test_a_session_whose_token_stops_working_goes_back_to_the_login(admin_url) -> None:
    url, operator = admin_url
    with console(url) as page:
        page.log_in(TOKEN)
        page.wait_text("#state", "^ready$")
        operator.settings = operator.settings.model_copy(update={"admin_token": SecretStr("rotated")})
        assert "wrong bearer token" in page.wait_text("#login-error", "wrong", timeout_s=10)
        assert page.page.is_hidden("#console-view")
