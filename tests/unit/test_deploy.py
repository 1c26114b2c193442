"""deploy/ checked with the tools its users run: promtool on the alert rules (their own unit tests included) and the
scrape configuration, a PromQL parser on the dashboard's queries, the Kubernetes schemas on the manifests (and the
Prometheus Operator's on the ServiceMonitor). That the metric names exist in a live run's /metrics, and that a real
Prometheus evaluates all of it against a live run, is tests/integration/test_deploy_live.py."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from deploy_queries import (
    ALERT_TESTS,
    ALERTS,
    DEPLOY,
    SCRAPE_CONFIG,
    alert_expressions,
    dashboard,
    dashboard_expressions,
    metric_names,
)
from unit.test_admin_api import InMemoryOperator

from vms_admin.app import create_app

REPO = Path(__file__).parents[2]
MANIFESTS = DEPLOY / "kubernetes" / "vms.yaml"
KUBERNETES_VERSION = "1.33"
NPM_PREFIX = REPO / ".venv" / "npm"  # where `make test` installs the Prometheus Operator's models


def promtool(*args: str) -> subprocess.CompletedProcess:
    if shutil.which("promtool") is None:
        pytest.skip("SKIPPED LOUDLY: no promtool: `make test` installs Debian's prometheus package (needs root)")
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120)


def test_the_alert_rules_pass_promtool_and_their_unit_tests_fire_each_alert() -> None:
    checked = promtool("check", "rules", str(ALERTS))
    assert checked.returncode == 0 and f"SUCCESS: {len(alert_expressions())} rules found" in checked.stdout, checked
    tested = promtool("test", "rules", str(ALERT_TESTS))
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr
    fired = {
        test["alertname"]
        for case in yaml.safe_load(ALERT_TESTS.read_text())["tests"]
        for test in case["alert_rule_test"]
        if test.get("exp_alerts")
    }
    assert fired == set(alert_expressions()), "every alert is shown firing"


def test_an_alert_rule_that_waits_longer_fails_its_unit_test(tmp_path: Path) -> None:
    """The rules' tests can fail: VmsEngineNotReady waiting 20 minutes instead of 10 is caught."""
    shutil.copy(ALERT_TESTS, tmp_path / ALERT_TESTS.name)
    (tmp_path / ALERTS.name).write_text(ALERTS.read_text().replace("for: 10m", "for: 20m", 1))
    tested = promtool("test", "rules", str(tmp_path / ALERT_TESTS.name))
    assert tested.returncode != 0 and "alertname: VmsEngineNotReady" in tested.stdout + tested.stderr


def test_the_scrape_configuration_is_valid() -> None:
    checked = promtool("check", "config", "--syntax-only", str(SCRAPE_CONFIG))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    assert config["rule_files"] == [ALERTS.name]
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics" and job["authorization"]["type"] == "Bearer"


def test_the_dashboard_queries_parse_and_its_variables_are_defined() -> None:
    board = dashboard()
    expressions = dashboard_expressions()
    assert len(expressions) >= 15
    for title, expression in expressions.items():
        assert metric_names(expression), f"{title}: selects no metric"  # parse errors raise here
    defined = {variable["name"] for variable in board["templating"]["list"]}
    used = set(re.findall(r"\$\{?(\w+)", json.dumps(board["panels"]))) - {"__rate_interval"}
    assert used <= defined, f"undefined variables: {used - defined}"


def test_the_dashboard_panels_fit_the_grid_without_overlapping() -> None:
    panels = dashboard()["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        place = panel["gridPos"]
        assert place["x"] >= 0 and place["x"] + place["w"] <= 24, panel["title"]
        columns, rows = range(place["x"], place["x"] + place["w"]), range(place["y"], place["y"] + place["h"])
        mine = {(x, y) for x in columns for y in rows}
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine


def manifests() -> list[dict]:
    return list(yaml.safe_load_all(MANIFESTS.read_text()))


def test_the_kubernetes_objects_validate_against_the_schemas() -> None:
    kinds = [document["kind"] for document in manifests()]
    assert kinds == ["Deployment", "Service", "PodDisruptionBudget", "ServiceMonitor"]
    for document in manifests():
        if document["kind"] != "ServiceMonitor":
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    broken = manifests()[0]
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/health/ready"
    with pytest.raises(kubernetes_validate.ValidationError, match="paht"):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def validate_service_monitors(objects: list[dict]) -> subprocess.CompletedProcess:
    if shutil.which("node") is None or not (NPM_PREFIX / "node_modules").is_dir():
        pytest.skip(f"SKIPPED LOUDLY: no node or no {NPM_PREFIX}/node_modules: `make test` installs them")
    script = Path(__file__).with_name("validate_service_monitor.mjs")
    return subprocess.run(
        ["node", str(script), str(NPM_PREFIX)], input=json.dumps(objects), capture_output=True, text=True, timeout=60
    )


def test_the_service_monitor_validates_against_the_prometheus_operator_schema() -> None:
    monitor = manifests()[3]
    result = validate_service_monitors([monitor])
    assert result.returncode == 0, result.stdout + result.stderr
    broken = json.loads(json.dumps(monitor))
    broken["spec"]["endpoints"][0]["interval"] = "15 seconds"
    result = validate_service_monitors([broken])
    assert result.returncode == 1 and "interval" in result.stdout


def test_probes_ports_and_volumes_match_the_admin_api_and_the_image() -> None:
    deployment, service, budget, monitor = manifests()
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    routes = {route.path for route in create_app(InMemoryOperator("t")).routes}
    probes = {name: container[name]["httpGet"] for name in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert {probe["path"] for probe in probes.values()} <= routes
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(rf"^EXPOSE {ports['openai']} {ports['admin']}$", dockerfile, re.M)
    assert all(probe["port"] == "admin" for probe in probes.values())
    assert monitor["spec"]["endpoints"][0]["port"] == "admin" and "/metrics" in routes
    mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
    assert '"/var/cache/vms"' in dockerfile and {"/var/cache/vms", "/dev/shm", "/tmp"} <= mounts
    restricted = container["securityContext"]
    assert restricted["readOnlyRootFilesystem"] and restricted["capabilities"]["drop"] == ["ALL"]
    assert not restricted["allowPrivilegeEscalation"] and pod["securityContext"]["runAsNonRoot"]
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["securityContext"]["runAsUser"] == 10001 and "USER 10001" in dockerfile
    selector = deployment["spec"]["selector"]["matchLabels"]
    for other in (service["spec"]["selector"], budget["spec"]["selector"]["matchLabels"]):
        assert other.items() <= deployment["spec"]["template"]["metadata"]["labels"].items() and other == selector
    assert pod["terminationGracePeriodSeconds"] > 30  # VMS_DRAIN_TIMEOUT's default
