"""The operator's own processes killed outright: `vms serve` exits non-zero (so an orchestrator restarts it, and
in the container the exit ends the container) and no process of the run is left behind on the host.

Two kills, each of a real `vms serve` with a real engine: supervisord (its children are handed to `vms serve`,
a child subreaper, which stops them) and the operator (supervisord's watchdog shuts everything down).
"""

import signal
import time
from pathlib import Path

import psutil
import pytest
from integration.served import Served, start, stop

pytestmark = pytest.mark.integration

EXIT_BOUND_S = 90


def program(served: Served, marker: str) -> psutil.Process:
    matches = [process for process in served.process_tree() if marker in " ".join(process.cmdline())]
    assert len(matches) == 1, [process.cmdline() for process in served.process_tree()]
    return matches[0]


@pytest.mark.parametrize(
    ("killed", "marker"),
    [("supervisord", "supervisor.supervisord"), ("operator", "vms_supervisor.operator")],
)
def test_killing_a_run_process_ends_vms_serve_non_zero_with_nothing_left(
    killed: str, marker: str, default_model_dir: Path, tmp_path: Path, measurement
) -> None:
    served = start(tmp_path, {}, "--model", str(default_model_dir), "--max-model-len", "512")
    try:
        served.wait_ready()
        tree = served.process_tree()
        engine = program(served, "vllm.entrypoints.openai.api_server")
        assert engine in tree
        program(served, marker).send_signal(signal.SIGKILL)
        started = time.monotonic()
        code = served.process.wait(timeout=EXIT_BOUND_S)
        measurement(f"{killed} SIGKILLed: vms serve exited {code} after {time.monotonic() - started:.1f} s")
        assert code != 0
        survivors = [process for process in tree if process.is_running() and process.status() != "zombie"]
        assert survivors == [], [process.cmdline() for process in survivors]
        assert "exited" in served.log_tail() or "left behind" in served.log_tail()
    finally:
        stop(served)
