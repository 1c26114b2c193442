"""Ray nodes on this machine, for the tests of ranks on more than one machine.

Each node is a real `ray start --block` process (a head, then nodes joining it), each declaring the ranks it takes
as its NPU resource, as a CPU host does (see vms_plugin/worker/device.py). Stopping a node's process makes Ray
stop that node's processes.
"""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from integration.served import free_port

RAY = Path(sys.executable).with_name("ray")
OBJECT_STORE_BYTES = 100_000_000  # Ray's minimum is 75 MB; the tests pass no large objects
START_TIMEOUT_S = 120


@dataclass
class RayCluster:
    address: str
    log_dir: Path
    nodes: list[subprocess.Popen] = field(default_factory=list)

    def add_node(self, ranks: int) -> None:
        """A node joining the head that takes `ranks` ranks."""
        self._start(["--address", self.address], ranks)
        self.wait_for_nodes(len(self.nodes))

    def _start(self, role_args: list[str], ranks: int) -> None:
        log = (self.log_dir / f"node-{len(self.nodes)}.log").open("w")
        command = [
            str(RAY),
            "start",
            "--block",
            *role_args,
            "--node-ip-address=127.0.0.1",
            "--num-cpus=1",
            f"--resources={json.dumps({'NPU': ranks})}",
            f"--object-store-memory={OBJECT_STORE_BYTES}",
            "--disable-usage-stats",
        ]
        environ = {name: value for name, value in os.environ.items() if name != "RAY_ADDRESS"}
        self.nodes.append(subprocess.Popen(command, env=environ, stdout=log, stderr=subprocess.STDOUT))

    def status(self) -> str:
        result = subprocess.run(
            [str(RAY), "status", f"--address={self.address}"], capture_output=True, text=True, timeout=60
        )
        return result.stdout + result.stderr

    def wait_for_nodes(self, count: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            for node in self.nodes:
                assert node.poll() is None, f"a Ray node exited ({node.returncode}); logs in {self.log_dir}"
            if self.status().count(" node_") >= count:
                return
            time.sleep(1)
        raise AssertionError(f"{count} Ray nodes not up in {START_TIMEOUT_S} s:\n{self.status()}")

    def stop(self) -> None:
        for node in reversed(self.nodes):  # the head last
            node.send_signal(signal.SIGTERM)
            try:
                node.wait(timeout=60)
            except subprocess.TimeoutExpired:
                node.kill()
                node.wait()


def start_head(log_dir: Path, ranks: int) -> RayCluster:
    port = free_port()
    cluster = RayCluster(address=f"127.0.0.1:{port}", log_dir=log_dir)
    cluster._start(
        [
            "--head",
            f"--port={port}",
            f"--ray-client-server-port={free_port()}",
            "--include-dashboard=false",
        ],
        ranks,
    )
    cluster.wait_for_nodes(1)
    return cluster
