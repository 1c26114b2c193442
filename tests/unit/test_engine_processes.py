"""The engine's processes found by their vLLM titles: a real tree of processes titled as vLLM titles them."""

import pytest
from titled_processes import end_tree, start_tree

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


def test_replicas_and_their_workers_are_listed_with_pid_and_device(tmp_path) -> None:
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
    server = start_tree(tmp_path, tree, ranks=4)
    try:
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
        end_tree(server)
