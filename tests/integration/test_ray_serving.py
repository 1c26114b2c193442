"""Ranks on more than one machine through vLLM's Ray executor (`--distributed-executor-backend ray`).

Two Ray nodes run on this machine (`ray start --head` and a node joining it, each declaring one rank as its NPU
resource, as a CPU host does); the tiny Qwen2 over 2 ranks places one rank on each node, and its greedy output and
top-5 logprobs equal one rank's.
"""

import pytest

from .conftest import RAY_JOB
from .test_tensor_parallel_serving import LOGPROB_TOLERANCE, largest_logprob_difference

pytestmark = pytest.mark.integration


def _single_rank(plugin_greedy) -> dict:
    return plugin_greedy[RAY_JOB.split("-", 2)[2]]


def test_the_two_ranks_run_on_the_two_ray_nodes(ray_greedy, ray_cluster) -> None:
    assert ray_greedy["platform"] == "MindSporePlatform"
    assert [worker["rank"] for worker in ray_greedy["workers"]] == [0, 1]
    nodes = {worker["ray_node"] for worker in ray_greedy["workers"]}
    assert None not in nodes and len(nodes) == 2, ray_greedy["workers"]
    assert ray_cluster.status().count(" node_") == 2


def test_greedy_across_two_ray_nodes_equals_one_rank(ray_greedy, plugin_greedy) -> None:
    single = _single_rank(plugin_greedy)
    for index, (tokens, reference) in enumerate(zip(ray_greedy["token_ids"], single["token_ids"], strict=True)):
        assert tokens == reference, f"prompt {index} differs from one rank"


def test_logprobs_across_two_ray_nodes_match_one_rank(ray_greedy, plugin_greedy, measurement) -> None:
    single = _single_rank(plugin_greedy)["sampled"]["logprobs"]
    largest, compared = largest_logprob_difference(ray_greedy, single)
    measurement(f"Ray, 2 nodes: largest logprob difference from one rank {largest:.1e} ({compared} compared)")
    assert largest < LOGPROB_TOLERANCE
