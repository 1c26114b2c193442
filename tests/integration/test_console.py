"""The console page of a served run, in headless Chromium: log in, the engine's state and history, charts drawn
from the live engine's relayed metrics under load, the engine log, a restart through the button (its pid
changes), a wrong token refused. The token never shows in a URL, the page or a log line, and the page asks no other
host for anything. Screenshots land in test-results/console/. The NPU table on a fake Ascend host is shown by the
container test (tests/container/test_image.py), where the appliance probes a fake chip."""

import threading

import httpx
import psutil
import pytest
from console_browser import Console, console, number

from integration.served import TOKEN, Served

pytestmark = pytest.mark.integration

CLIENTS = 6


def load(served: Served, model: str, stop: threading.Event) -> None:
    """One client sending long completions back to back until `stop`."""
    body = {"model": model, "prompt": "Once upon a time", "max_tokens": 96, "ignore_eos": True}
    with httpx.Client(timeout=120) as client:
        while not stop.is_set():
            client.post(served.base_url + "/v1/completions", json=body)


def chart_peak(page: Console, chart: str) -> float:
    return float(page.page.get_attribute(f"#chart-{chart}", "data-peak") or 0)


def test_a_wrong_token_is_refused(served_tiny: Served) -> None:
    with console(served_tiny.admin_url) as page:
        page.log_in("not-the-token")
        assert "wrong bearer token" in page.wait_text("#login-error", "wrong")
        assert page.page.is_hidden("#console-view") and page.page.input_value("#token") == ""
        page.shot("wrong-token")
        assert page.page.evaluate("sessionStorage.length") == 0


def test_state_charts_under_load_logs_and_a_restart_through_the_button(served_tiny: Served) -> None:
    model = str(served_tiny.status()["model"])
    with console(served_tiny.admin_url) as page:
        page.log_in(TOKEN)
        page.wait_text("#state", "^ready$")
        assert page.fact("model") == model and page.fact("device") == "cpu"
        assert "vllm 0.32" in page.fact("versions") and "mindspore 2.10" in page.fact("versions")
        assert page.fact("restarts") == "0" and page.fact("engine-pid") == str(served_tiny.status()["engine_pid"])
        assert "starting ready /health answered" in " ".join(page.text("#history-table tbody").split())
        assert "no /dev/davinci* device nodes" in page.text("#npu-note")  # this host has no NPU: said, not faked

        stop = threading.Event()
        clients = [threading.Thread(target=load, args=(served_tiny, model, stop)) for _ in range(CLIENTS)]
        for client in clients:
            client.start()
        try:
            page.page.wait_for_function(
                "() => ['requests', 'tokens', 'ttft', 'kv'].every(c => Number(document.getElementById('chart-' + c)"
                ".dataset.peak) > 0)",
                timeout=120_000,
            )
            page.page.wait_for_timeout(10_000)  # some more points: lines to see, in the screenshot too
            page.shot("under-load")
        finally:
            stop.set()
            for client in clients:
                client.join()
        assert chart_peak(page, "requests") >= 2, "never two requests running at once"
        assert chart_peak(page, "tokens") > 10
        assert 0 < chart_peak(page, "kv") <= 100
        assert number(page.text("#tokens-now")) >= 0
        for chart in ("chart-requests", "chart-tokens", "chart-ttft", "chart-kv"):
            assert page.line_pixels(chart) > 20, f"{chart}: no line drawn"
        page.wait_text("#log-tail", "POST /v1/completions")

        pid = served_tiny.status()["engine_pid"]
        page.page.click('button[data-action="restart"]')  # cancelled: nothing happens
        page.page.click("#confirm-no")
        assert served_tiny.status()["engine_pid"] == pid
        page.confirm("restart")
        page.wait_text('dd[data-fact="engine-pid"]', rf"^(?!{pid}$)\d+$", timeout_s=300)
        page.wait_text("#state", "^ready$", timeout_s=300)
        status = served_tiny.status()
        assert status["engine_pid"] != pid and psutil.pid_exists(status["engine_pid"])
        assert not psutil.pid_exists(pid)
        assert "restart requested through the admin API" in page.text("#history-table tbody")
        page.shot("after-restart")

        assert page.other_hosts() == [], "the page asked another host"
        assert not [url for url in page.requests if TOKEN in url]
        assert TOKEN not in page.page.content()
        assert page.console_errors == []
    logged = served_tiny.log.read_text(errors="replace") + "".join(
        path.read_text(errors="replace") for path in served_tiny.run_dir.rglob("*.log*") if path.is_file()
    )
    assert "engine restart requested through the admin API" in logged  # the logs read are the run's
    assert TOKEN not in logged
