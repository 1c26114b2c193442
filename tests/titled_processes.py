"""Real process trees titled as vLLM titles its processes (VLLM::EngineCore, VLLM::Worker_TP1, ...), for the
operator's tests: each process takes its title, starts its children, then sleeps."""

import json
import subprocess
import sys
import time
from pathlib import Path

from vms_supervisor.engine_processes import engine_ranks

TITLED = """
import json, subprocess, sys, time, setproctitle
tree = json.loads(sys.argv[1])
setproctitle.setproctitle(tree["title"])
children = [subprocess.Popen([sys.executable, __file__, json.dumps(child)]) for child in tree.get("children", [])]
time.sleep(60)
"""


def start_tree(tmp_path: Path, tree: dict, ranks: int) -> subprocess.Popen:
    """The tree's root in a session of its own, once `ranks` engine processes below it carry their titles."""
    script = tmp_path / "titled.py"
    script.write_text(TITLED)
    root = subprocess.Popen([sys.executable, str(script), json.dumps(tree)], start_new_session=True)
    deadline = time.monotonic() + 60
    while len(engine_ranks(root.pid, "cpu")) < ranks and time.monotonic() < deadline:
        time.sleep(0.1)
    return root


def end_tree(root: subprocess.Popen) -> None:
    subprocess.run(["pkill", "-KILL", "-s", str(root.pid)], check=False)  # the whole session
    root.wait()
