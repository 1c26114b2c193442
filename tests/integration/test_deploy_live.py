"""deploy/ against a live run: every metric the alert rules, the dashboard and the rules' unit tests read is in the
/metrics of a served engine, and a real Prometheus (Debian's) scraping that run with deploy/prometheus/prometheus.yml
(targets and token file put in) evaluates every rule without error, raises nothing on the healthy run, and answers
every dashboard query with data."""

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from deploy_queries import (
    ALERTS,
    SCRAPE_CONFIG,
    alert_expressions,
    alert_test_series_names,
    dashboard_expressions,
    dashboard_variable_metrics,
    exposed_names,
    metric_names,
)

from integration.served import TOKEN, Served, free_port

pytestmark = pytest.mark.integration

SETTLE_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def exposition(served_tiny: Served) -> str:
    """/metrics after a few requests, so that every histogram has observations."""
    model = served_tiny.status()["model"]
    for _ in range(3):
        reply = httpx.post(
            served_tiny.base_url + "/v1/completions",
            json={"model": model, "prompt": "Hello", "max_tokens": 8},
            timeout=120,
        )
        assert reply.status_code == 200, reply.text
    response = served_tiny.admin("GET", "/metrics")
    assert response.status_code == 200
    return response.text


def test_every_metric_read_by_the_rules_and_the_dashboard_is_exposed_by_a_live_run(exposition: str) -> None:
    exposed = exposed_names(exposition)
    queries = {**alert_expressions(), **dashboard_expressions()}
    read = {name: metric_names(expression) for name, expression in queries.items()}
    missing = {name: names - exposed for name, names in read.items() if names - exposed}
    assert missing == {}, f"not in a live run's /metrics: {missing}"
    assert dashboard_variable_metrics() <= exposed
    assert alert_test_series_names() <= exposed, "the rules' unit tests feed series a live run does not have"


@pytest.fixture(scope="module")
def prometheus(served_tiny: Served, exposition: str, tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """Debian's Prometheus scraping the served run every second with the shipped configuration and rules."""
    if shutil.which("prometheus") is None:
        pytest.skip("SKIPPED LOUDLY: no prometheus: `make test` installs Debian's prometheus package (needs root)")
    directory = tmp_path_factory.mktemp("prometheus")
    (directory / "token").write_text(TOKEN)
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(ALERTS)]
    (job,) = config["scrape_configs"]
    job["authorization"]["credentials_file"] = str(directory / "token")
    job["static_configs"] = [{"targets": [served_tiny.admin_url.removeprefix("http://")]}]
    (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
    port, log = free_port(), directory / "prometheus.log"
    process = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={directory / 'prometheus.yml'}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://127.0.0.1:{port}", log
    finally:
        process.terminate()
        process.wait(30)


def query(prometheus: str, expression: str) -> list[dict]:
    body = httpx.get(prometheus + "/api/v1/query", params={"query": expression}, timeout=10).json()
    assert body["status"] == "success", body
    return body["data"]["result"]


def settled(prometheus: str) -> list[dict]:
    """The rules once the target is up, a minute's rate window has two scrapes and every rule was evaluated."""
    deadline, rules = time.monotonic() + SETTLE_TIMEOUT_S, []
    while time.monotonic() < deadline:
        try:
            up = query(prometheus, "up")
            groups = httpx.get(prometheus + "/api/v1/rules", timeout=10).json()["data"]["groups"]
        except httpx.TransportError:
            time.sleep(0.5)
            continue
        rules = [rule for group in groups for rule in group["rules"]]
        scrapes = query(prometheus, "count_over_time(vms_engine_ready[1m])")
        evaluated = rules and all(rule.get("lastEvaluation", "").startswith("20") for rule in rules)
        if up and up[0]["value"][1] == "1" and scrapes and float(scrapes[0]["value"][1]) >= 3 and evaluated:
            return rules
        time.sleep(0.5)
    pytest.fail(f"Prometheus did not settle in {SETTLE_TIMEOUT_S} s: up={up}, rules={rules}")


def test_a_real_prometheus_evaluates_the_rules_and_the_dashboard_against_the_live_run(prometheus) -> None:
    prometheus, log = prometheus
    rules = settled(prometheus)
    assert {rule["name"] for rule in rules} == set(alert_expressions())
    assert [(rule["name"], rule["health"], rule.get("lastError")) for rule in rules if rule["health"] != "ok"] == []
    assert [rule["name"] for rule in rules if rule["state"] != "inactive"] == [], "an alert on a healthy run"
    empty = [title for title, expression in dashboard_expressions().items() if not query(prometheus, expression)]
    assert empty == [], f"dashboard queries with no data from a live run: {empty}"
    assert query(prometheus, "vms_engine_ready")[0]["value"][1] == "1"
    assert "level=error" not in log.read_text(), log.read_text()[-3000:]
