"""The engine's processes found by their vLLM titles: a real tree of processes titled as vLLM titles them."""

import json
import subprocess
import sys
import time

import pytest

from vms_supervisor.engine_processes import engine_ranks, parse_title, rank_label


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        ("VLLM::EngineCore", {"role": "engine_core", "dp_rank": 0, "tp_rank": 0}),
        ("VLLM::EngineCore_DP1", {"role": "engine_core", "dp_rank": 1, "tp_rank": 0}),
        ("VLLM::Worker_TP1", {"role": "worker", "dp_rank": 0, "tp_rank": 1}),
        ("VLLM::Worker_DP1_PP0_TP3", {"role": "worker", "dp_rank": 1, "tp_rank": 3}),
        ("python -m vllm.entrypoints.openai.api_server", None),
    ],
)
def test_vllm_process_titles_are_read(title, expected) -> None:
    assert parse_title(title) == expected


# A process that takes the title it is given and starts its children, each given its own subtree.
TITLED = """
import json, subprocess, sys, time, setproctitle
tree = json.loads(sys.argv[1])
setproctitle.setproctitle(tree["title"])
children = [subprocess.Popen([sys.executable, __file__, json.dumps(child)]) for child in tree.get("children", [])]
time.sleep(60)
"""


def test_replicas_and_their_workers_are_listed_with_pid_and_device(tmp_path) -> None:
    script = tmp_path / "titled.py"
    script.write_text(TITLED)
    # Two replicas: the first with two tensor-parallel workers, the second computing in its engine core.
    tree = {
        "title": "VLLM::APIServer",
        "children": [
            {
                "title": "VLLM::EngineCore_DP0",
                "children": [{"title": "VLLM::Worker_TP0"}, {"title": "VLLM::Worker_TP1"}],
            },
            {"title": "VLLM::EngineCore_DP1"},
        ],
    }
    server = subprocess.Popen([sys.executable, str(script), json.dumps(tree)], start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while len(engine_ranks(server.pid, "ascend")) < 4 and time.monotonic() < deadline:
            time.sleep(0.1)
        ranks = engine_ranks(server.pid, "ascend")
        assert [(r["role"], r["dp_rank"], r["tp_rank"], r["device"]) for r in ranks] == [
            ("engine_core", 0, 0, None),  # its workers compute
            ("worker", 0, 0, "npu:0"),
            ("worker", 0, 1, "npu:1"),
            ("engine_core", 1, 0, "npu:2"),  # computes itself; replica 1 starts after replica 0's 2 NPUs
        ]
        assert rank_label(ranks[2]) == f"worker DP0 TP1 (pid {ranks[2]['pid']})"
        assert [r["device"] for r in engine_ranks(server.pid, "cpu")] == [None, "cpu", "cpu", "cpu"]
    finally:
        subprocess.run(["pkill", "-KILL", "-s", str(server.pid)], check=False)  # the whole session
