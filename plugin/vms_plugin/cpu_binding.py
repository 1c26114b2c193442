"""Which cores each CPU rank computes on, when the user did not say and vLLM cannot decide.

vLLM's multiprocessing executor binds each CPU worker's OpenMP threads to a list of cores given by
VLLM_CPU_OMP_THREADS_BIND ("0-3|4-7": one list per local rank). Left at "auto", it gives each rank a NUMA node of
its own and stops when the host has fewer nodes than ranks. vms then splits the allowed cores into one
contiguous run per rank instead (or shares them round-robin when there are fewer cores than ranks).
"""

import logging
import os
from collections.abc import MutableMapping

BIND_VARIABLE = "VLLM_CPU_OMP_THREADS_BIND"

logger = logging.getLogger("vllm." + __name__)


def split_cores(cores: list[int], ranks: int) -> str:
    """`cores` as `ranks` lists in VLLM_CPU_OMP_THREADS_BIND's form, the first lists one core longer when they do
    not split evenly."""
    if len(cores) < ranks:
        return "|".join(str(cores[rank % len(cores)]) for rank in range(ranks))
    share, extra = divmod(len(cores), ranks)
    lists, start = [], 0
    for rank in range(ranks):
        size = share + (rank < extra)
        lists.append(",".join(str(core) for core in cores[start : start + size]))
        start += size
    return "|".join(lists)


_SET_BY_VMS = "_VMS_SET_CPU_OMP_THREADS_BIND"  # the binding vms wrote, told apart from one the user set


def bind_ranks_to_cores(local_ranks: int, numa_nodes: int, environ: MutableMapping[str, str] = os.environ) -> None:
    """Set VLLM_CPU_OMP_THREADS_BIND for `local_ranks` ranks on a host with `numa_nodes` nodes, unless the user set
    it or vLLM's automatic binding (one node per rank) can serve. A binding vms set for an earlier engine of this
    process is made again for this one."""
    current = environ.get(BIND_VARIABLE, "auto")
    if current == environ.get(_SET_BY_VMS):
        current = "auto"
        del environ[BIND_VARIABLE], environ[_SET_BY_VMS]
    if local_ranks < 2 or current != "auto" or numa_nodes >= local_ranks:
        return
    binding = split_cores(sorted(os.sched_getaffinity(0)), local_ranks)
    environ[BIND_VARIABLE] = environ[_SET_BY_VMS] = binding
    logger.info(
        "vms_plugin: %d ranks on %d NUMA node(s): each rank computes on its share of the cores, %s=%s",
        local_ranks,
        numa_nodes,
        BIND_VARIABLE,
        binding,
    )
