"""CPU ranks on a host with fewer NUMA nodes than ranks: vms splits the cores (vLLM's automatic binding would
stop), and leaves a binding the user chose, or one vLLM can make, alone."""

import os

import pytest

from vms_plugin.cpu_binding import BIND_VARIABLE, bind_ranks_to_cores, split_cores


@pytest.mark.parametrize(
    ("cores", "ranks", "expected"),
    [
        ([0, 1], 2, "0|1"),
        ([0, 1, 2, 3, 4, 5, 6, 7], 2, "0,1,2,3|4,5,6,7"),
        ([0, 1, 2, 3, 4], 2, "0,1,2|3,4"),  # the first rank takes the odd core
        ([4, 5, 6], 3, "4|5|6"),
        ([0, 1], 3, "0|1|0"),  # fewer cores than ranks: shared round-robin
    ],
)
def test_cores_split_into_one_contiguous_run_per_rank(cores, ranks, expected) -> None:
    assert split_cores(cores, ranks) == expected


def test_a_host_with_too_few_numa_nodes_gets_the_cores_split() -> None:
    environ: dict[str, str] = {}
    bind_ranks_to_cores(2, numa_nodes=1, environ=environ)
    assert environ[BIND_VARIABLE] == split_cores(sorted(os.sched_getaffinity(0)), 2)


def test_a_later_engine_in_the_same_process_gets_a_binding_of_its_own() -> None:
    environ: dict[str, str] = {}
    bind_ranks_to_cores(2, numa_nodes=1, environ=environ)
    bind_ranks_to_cores(3, numa_nodes=1, environ=environ)  # not taken for the user's: vms set it
    assert environ[BIND_VARIABLE] == split_cores(sorted(os.sched_getaffinity(0)), 3)
    bind_ranks_to_cores(1, numa_nodes=1, environ=environ)
    assert BIND_VARIABLE not in environ  # one rank: vLLM's default again


@pytest.mark.parametrize(
    ("environ", "ranks", "numa_nodes"),
    [
        ({BIND_VARIABLE: "0|1"}, 2, 1),  # the user's binding
        ({BIND_VARIABLE: "nobind"}, 2, 1),
        ({}, 2, 2),  # one node per rank: vLLM's own automatic binding serves
        ({}, 1, 1),  # one rank
    ],
)
def test_a_chosen_or_workable_binding_is_left_alone(environ, ranks, numa_nodes) -> None:
    before = dict(environ)
    bind_ranks_to_cores(ranks, numa_nodes, environ)
    assert environ == before
