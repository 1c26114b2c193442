"""What the machine allows: measured memory bandwidth and matmul FLOP/s, and the ceilings they put on a model.

Decode of one stream reads every weight once per token, so tokens/s <= bandwidth / weight bytes. A batch
reuses each weight for every row, so its ceiling is compute: tokens/s <= FLOP/s / (2 x parameters). Attention
and the KV cache are left out, which makes both ceilings slightly optimistic: real figures sit below them.
"""

import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np


def memory_bandwidth(megabytes: int = 512, repeats: int = 5) -> float:
    """Bytes/s of a multi-threaded array copy (each byte read once and written once), best of `repeats`."""
    threads = os.cpu_count() or 1
    source = np.ones(megabytes * (1 << 20) // 4, dtype=np.float32)
    target = np.empty_like(source)
    slices = np.array_split(np.arange(source.size), threads)
    bounds = [(int(part[0]), int(part[-1]) + 1) for part in slices]

    def copy(bound: tuple[int, int]) -> None:
        np.copyto(target[bound[0] : bound[1]], source[bound[0] : bound[1]])  # numpy releases the GIL here

    best = float("inf")
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(repeats):
            start = time.perf_counter()
            list(pool.map(copy, bounds))
            best = min(best, time.perf_counter() - start)
    return 2 * source.nbytes / best


def matmul_flops(size: int = 2048, repeats: int = 3) -> float:
    """FLOP/s of a float32 square matmul through numpy's BLAS (all cores), best of `repeats`."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    a @ b  # warm-up: thread pool start
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def measure_machine(smoke: bool = False) -> dict:
    if smoke:
        return {"bandwidth_bytes_per_s": memory_bandwidth(64, 2), "matmul_flops": matmul_flops(512, 2)}
    return {"bandwidth_bytes_per_s": memory_bandwidth(), "matmul_flops": matmul_flops()}


def ceilings(machine: dict, weight_bytes: int, parameters: int) -> dict:
    """Upper bounds on single-stream decode and batch throughput for a model of this size on this machine."""
    return {
        "weight_bytes": weight_bytes,
        "parameters": parameters,
        "decode_tokens_per_s": machine["bandwidth_bytes_per_s"] / weight_bytes,
        "throughput_tokens_per_s": machine["matmul_flops"] / (2 * parameters),
    }
