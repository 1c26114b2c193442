"""/metrics: the operator's own gauges and counters, followed by the engine's exposition relayed as it is."""

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from vms_admin.operator_view import Operator

STATES = ("starting", "ready", "unhealthy", "restarting", "failed", "stopped")


def render_metrics(operator: Operator) -> str:
    """A fresh registry per scrape: every value is read from the operator now, nothing is cached."""
    registry = CollectorRegistry()
    status, devices = operator.status(), operator.devices()
    state = Gauge("vms_engine_state", "1 for the engine's current state", ["state"], registry=registry)
    for name in STATES:
        state.labels(name).set(1 if status["state"] == name else 0)
    Gauge("vms_engine_ready", "1 while the engine is ready to serve", registry=registry).set(int(operator.ready()))
    restarts = Counter("vms_engine_restarts", "engine restarts by the operator", registry=registry)
    restarts.inc(status["restarts"])
    Gauge("vms_engine_uptime_seconds", "seconds since the engine last became ready", registry=registry).set(
        status["uptime_s"] or 0
    )
    chips = Gauge("vms_npu_chips", "Ascend chips found by the probe, by health", ["health"], registry=registry)
    for chip in (devices.get("npu_smi") or {}).get("chips", []):
        chips.labels(chip["health"]).inc()
    own = generate_latest(registry).decode()
    return own + operator.engine_metrics()
