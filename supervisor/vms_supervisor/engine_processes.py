"""The engine's processes under the API server, as vLLM titles them: engine cores (one per data-parallel
replica) and, with several ranks, one worker per rank. `/admin/status` lists them with pid and device.

vLLM titles them `VLLM::EngineCore`, `VLLM::EngineCore_DP1`, `VLLM::Worker_TP0`, `VLLM::Worker_DP1_TP0`...; with
one rank the worker runs inside its engine core.
"""

import re

import psutil

from vms_plugin.worker.device import local_device_index

_TITLE = re.compile(r"::(?P<role>EngineCore|Worker)(?P<labels>(?:_[A-Z]+\d+)*)$")
_LABEL = re.compile(r"_([A-Z]+)(\d+)")


def parse_title(title: str) -> dict | None:
    """{"role": "engine_core" | "worker", "dp_rank": int, "tp_rank": int} of a vLLM process title, or None."""
    match = _TITLE.search(title.strip())
    if match is None:
        return None
    labels = {name: int(value) for name, value in _LABEL.findall(match.group("labels"))}
    role = "engine_core" if match.group("role") == "EngineCore" else "worker"
    return {"role": role, "dp_rank": labels.get("DP", 0), "tp_rank": labels.get("TP", 0)}


def rank_device(device: str, dp_rank: int, tp_rank: int, ranks_per_replica: int) -> str:
    """Where a rank computes: on Ascend the visible NPU the worker takes (vms_plugin/worker/device.py), else the
    CPU."""
    if device != "ascend":
        return "cpu"
    return f"npu:{local_device_index(tp_rank, dp_rank, ranks_per_replica)}"


def rank_label(rank: dict) -> str:
    """How a process of `engine_ranks` is named in the operator's messages: "worker DP0 TP1 (pid 123)"."""
    return f"{rank['role'].replace('_', ' ')} DP{rank['dp_rank']} TP{rank['tp_rank']} (pid {rank['pid']})"


def engine_ranks(engine_pid: int | None, device: str) -> list[dict]:
    """The engine's cores and workers below `engine_pid`, by data-parallel then tensor-parallel rank. A worker
    whose title has no DP label belongs to the replica of the engine core above it."""
    if engine_pid is None:
        return []
    try:
        ranks = _ranks_below(psutil.Process(engine_pid), dp_rank=0)
    except psutil.NoSuchProcess:
        return []
    ranks_per_replica = 1 + max((rank["tp_rank"] for rank in ranks), default=0)
    for rank in ranks:
        if rank.pop("computes"):
            rank["device"] = rank_device(device, rank["dp_rank"], rank["tp_rank"], ranks_per_replica)
        else:
            rank["device"] = None
    return sorted(ranks, key=lambda rank: (rank["dp_rank"], rank["role"] != "engine_core", rank["tp_rank"]))


def _ranks_below(process: psutil.Process, dp_rank: int) -> list[dict]:
    ranks = []
    for child in process.children():
        try:
            described = parse_title(" ".join(child.cmdline()))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if described is None:
            ranks += _ranks_below(child, dp_rank)
            continue
        if described["role"] == "worker":
            described["dp_rank"] = described["dp_rank"] or dp_rank
        below = _ranks_below(child, described["dp_rank"])
        # An engine core computes itself unless it has workers (one rank: the worker runs inside it).
        computes = described["role"] == "worker" or not any(rank["role"] == "worker" for rank in below)
        ranks += [{**described, "pid": child.pid, "computes": computes}, *below]
    return ranks
