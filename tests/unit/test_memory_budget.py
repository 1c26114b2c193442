"""The memory `vms config` prints, from the checkpoint's safetensors headers and the KV settings."""

from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from vms_supervisor.memory_budget import PER_EXTRA_RANK_BYTES, RUNTIME_BYTES, GiB, memory_budget, parameter_count


def checkpoint(tmp_path: Path) -> Path:
    save_file({"a": np.zeros((1000, 1000), np.float32), "b": np.zeros(24, np.float32)}, tmp_path / "one.safetensors")
    save_file({"c": np.zeros((10, 10, 10), np.float16)}, tmp_path / "two.safetensors")
    return tmp_path


def test_parameters_are_counted_from_every_file_s_header(tmp_path: Path) -> None:
    assert parameter_count(checkpoint(tmp_path)) == 1_000_000 + 24 + 1000
    assert parameter_count(tmp_path / "nothing") is None


def test_cpu_holds_weights_and_kv_per_replica_and_the_limit_rounds_up(tmp_path: Path) -> None:
    model = checkpoint(tmp_path)
    budget = memory_budget(model, "float32", False, GiB, "cpu", ranks=1, replicas=1)
    assert (budget.weights, budget.kv_cache, budget.runtime) == (4 * 1_001_024, GiB, RUNTIME_BYTES)
    assert budget.limit == 3 * GiB + GiB // 2  # (2.5 GiB + 4 MB) * 1.2 = 3.005 GiB, up to the next half GiB
    assert memory_budget(model, "auto", False, GiB, "cpu", 1, 1).weights == 2 * 1_001_024  # served 16-bit
    assert memory_budget(model, "auto", True, GiB, "cpu", 1, 1).weights == 1_001_024  # int8
    two = memory_budget(model, "auto", False, GiB, "cpu", ranks=2, replicas=2)
    assert (two.weights, two.kv_cache) == (4 * 1_001_024, 2 * GiB)  # each replica holds both
    assert two.runtime == RUNTIME_BYTES + 3 * PER_EXTRA_RANK_BYTES
    assert "GiB (weights" in two.describe()


def test_on_ascend_the_host_holds_no_kv_cache(tmp_path: Path) -> None:
    budget = memory_budget(checkpoint(tmp_path), "bfloat16", False, 8 * GiB, "ascend", ranks=8, replicas=1)
    assert budget.kv_cache == 0 and budget.runtime == RUNTIME_BYTES + 7 * PER_EXTRA_RANK_BYTES
