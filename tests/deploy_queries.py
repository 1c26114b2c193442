"""The PromQL in deploy/: the alert rules' expressions, the Grafana dashboard's queries (its variables replaced as
Grafana does before it sends them) and the series of the rules' unit tests, with the metric names each reads."""

import json
from pathlib import Path

import promql_parser
import yaml

DEPLOY = Path(__file__).parents[1] / "deploy"
ALERTS = DEPLOY / "prometheus" / "vms-alerts.yml"
ALERT_TESTS = DEPLOY / "prometheus" / "vms-alerts.test.yml"
SCRAPE_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
DASHBOARD = DEPLOY / "grafana" / "vms-dashboard.json"
# What Grafana puts in place of its variables: all instances, all models, a rate window.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$instance": ".*", "$model": ".*"}


def alert_expressions() -> dict[str, str]:
    rules = yaml.safe_load(ALERTS.read_text())
    return {rule["alert"]: rule["expr"] for group in rules["groups"] for rule in group["rules"]}


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_expressions() -> dict[str, str]:
    """'panel title / refId' -> the query as Grafana sends it."""
    found = {}
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            query = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                query = query.replace(variable, value)
            found[f"{panel['title']} / {target['refId']}"] = query
    return found


def dashboard_variable_metrics() -> set[str]:
    """The metrics the dashboard's variables list label values of (label_values(metric, label))."""
    found = set()
    for variable in dashboard()["templating"]["list"]:
        query = variable.get("definition", "")
        if query.startswith("label_values("):
            found.add(query.removeprefix("label_values(").split(",")[0].strip())
    return found


def metric_names(expression: str) -> set[str]:
    """The metric names an expression selects (parsing it: a syntax error raises)."""
    names: set[str] = set()

    def visit(node) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(expression), visit)
    return names


def alert_test_series_names() -> set[str]:
    tests = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    return {metric_names(series["series"]).pop() for test in tests for series in test["input_series"]}


def exposed_names(exposition: str) -> set[str]:
    """Every metric name in Prometheus text: those with samples, and those declared by # TYPE (vms_npu_chips has
    samples only where npu-smi finds chips)."""
    names = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            suffixes = {"counter": ["_total", "_created"], "histogram": ["_bucket", "_sum", "_count", "_created"]}
            names.update([name, *(name.removesuffix("_total") + s for s in suffixes.get(kind, []))])
        elif line and not line.startswith("#"):
            names.add(line.split("{")[0].split(" ")[0])
    return names
