"""How much memory a run needs on the host side, from the model and the KV settings: what `vms config` prints for
`docker run --memory` or a pod's memory limit. On CPU the weights and the KV cache live in host memory; on Ascend
they live in HBM, and the host needs the runtime only (and the weights once, while they are read).

The runtime figures come from measurement: the operator, supervisord, vLLM's API server and one engine process
with MindSpore take about 1.2 GiB on CPU (a tiny model with a 256 MiB KV cache peaked at 1.45 GiB); each further
rank's worker adds its own MindSpore. tests/reliability/test_memory_limit.py serves the default model under load
inside the printed limit (3.5 GiB; its peak, page cache included, was 2.4 GiB).
"""

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

GiB = 2**30
RUNTIME_BYTES = int(1.5 * GiB)  # the processes of a one-rank run, before weights and KV cache
PER_EXTRA_RANK_BYTES = 1 * GiB  # each further tensor- or data-parallel rank's worker process
MARGIN = 1.2  # activations of the largest step, allocator slack
ROUND_TO = GiB // 2
SERVED_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


@dataclass(frozen=True)
class MemoryBudget:
    weights: int
    kv_cache: int
    runtime: int

    @property
    def limit(self) -> int:
        """The memory limit to give the container: the sum with a margin, rounded up to half a GiB."""
        total = (self.weights + self.kv_cache + self.runtime) * MARGIN
        return -(-int(total) // ROUND_TO) * ROUND_TO

    def describe(self) -> str:
        weights, kv_cache, runtime = (part / GiB for part in (self.weights, self.kv_cache, self.runtime))
        parts = f"weights {weights:.2f} + KV cache {kv_cache:.2f} + runtime {runtime:.2f} GiB"
        return f"{self.limit / GiB:.1f} GiB ({parts}, plus {MARGIN - 1:.0%})"


def parameter_count(model_dir: Path) -> int | None:
    """Elements of every tensor in the checkpoint's safetensors files (their headers only); None without any."""
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        return None
    count = 0
    for path in files:
        with path.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
        count += sum(math.prod(tensor["shape"]) for name, tensor in header.items() if name != "__metadata__")
    return count


def memory_budget(
    model_dir: Path, dtype: str, quantized: bool, kv_cache_bytes: int, device: str, ranks: int, replicas: int
) -> MemoryBudget | None:
    """The host memory a run needs; None when the model's files are not there yet."""
    parameters = parameter_count(model_dir)
    if parameters is None:
        return None
    element = 1 if quantized else SERVED_BYTES.get(dtype, 2)  # auto: a 16-bit type (float32 is served as bfloat16)
    on_host = device == "cpu"
    weights = parameters * element * (replicas if on_host else 1)  # on Ascend the host reads them once
    kv_cache = kv_cache_bytes * replicas if on_host else 0
    runtime = RUNTIME_BYTES + PER_EXTRA_RANK_BYTES * (ranks * replicas - 1)
    return MemoryBudget(weights, kv_cache, runtime)
