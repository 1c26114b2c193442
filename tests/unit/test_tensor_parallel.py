"""Tensor-parallel layers simulated on the CPU: every rank runs in its own thread of this process with its own
shard, and an in-memory group sums (or concatenates) what the ranks hand to each collective, as HCCL would.
MindSpore's PyNative runtime is not safe to call from several threads at once (a third of runs failed with
"The pointer[runtime_info] is null"), so one rank computes at a time: a rank holds the compute lock except while
it waits at a collective's barrier.
The sharded results must equal the unsharded layer's exactly: inputs and weights are small integers, so every
product and partial sum is exact in float32 whatever the summation order, and any difference is a real one."""

import threading

import numpy as np
import pytest

WORLD = 4


class InMemoryGroup:
    """One rank's view of a group whose collectives meet at a barrier and combine every rank's tensor."""

    def __init__(self, rank: int, shared: dict) -> None:
        self.rank, self.world_size, self.shared = rank, WORLD, shared

    def _exchange(self, x, combine):
        from mindspore import Tensor

        slots, barrier, compute = self.shared["slots"], self.shared["barrier"], self.shared["compute"]
        slots[self.rank] = x.asnumpy()
        _wait_unlocked(barrier, compute)
        result = Tensor(combine([slots[r] for r in range(WORLD)]))
        _wait_unlocked(barrier, compute)  # nobody overwrites a slot before every rank has read it
        return result

    def all_reduce(self, x):
        return self._exchange(x, lambda parts: np.sum(parts, axis=0, dtype=np.float32))

    def all_gather(self, x):
        return self._exchange(x, lambda parts: np.concatenate(parts, axis=-1))


def _wait_unlocked(barrier: threading.Barrier, compute: threading.Lock) -> None:
    """Wait for every rank at the barrier, letting the others compute meanwhile."""
    compute.release()
    try:
        barrier.wait()
    finally:
        compute.acquire()


def run_ranks(build_and_run) -> list[np.ndarray]:
    """Run build_and_run(group) on WORLD threads, one per rank; their outputs in rank order."""
    shared = {"slots": {}, "barrier": threading.Barrier(WORLD, timeout=60), "compute": threading.Lock()}
    outputs, errors = [None] * WORLD, []

    def rank_main(rank: int) -> None:
        try:
            with shared["compute"]:
                outputs[rank] = build_and_run(InMemoryGroup(rank, shared)).asnumpy()
        except Exception as error:  # surfaced below; a thread's exception would otherwise vanish
            errors.append(error)
            shared["barrier"].abort()

    threads = [threading.Thread(target=rank_main, args=(rank,)) for rank in range(WORLD)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return outputs


def integers(rng, *shape: int) -> np.ndarray:
    return rng.integers(-4, 5, size=shape).astype(np.float32)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_column_then_row_parallel_mlp_equals_the_unsharded_mlp(rng) -> None:
    from mindspore import Tensor

    from vms_plugin.layers.parallel import ColumnParallelLinear, RowParallelLinear

    x, up, down = integers(rng, 5, 32), integers(rng, 64, 32), integers(rng, 32, 64)  # weights [out, in]
    bias = integers(rng, 32)
    expected = np.maximum(x @ up.T, 0) @ down.T + bias

    def rank(group):
        hidden = ColumnParallelLinear(up, group)(Tensor(x))  # this rank's 16 of the 64 features
        return RowParallelLinear(down, group, bias)(hidden.clip(0, None))

    for output in run_ranks(rank):
        np.testing.assert_array_equal(output, expected)


def test_column_parallel_with_gathered_output_equals_the_full_product(rng) -> None:
    from mindspore import Tensor

    from vms_plugin.layers.parallel import ColumnParallelLinear

    x, weight = integers(rng, 3, 16), integers(rng, 24, 16)
    for output in run_ranks(lambda group: ColumnParallelLinear(weight, group, gather_output=True)(Tensor(x))):
        np.testing.assert_array_equal(output, x @ weight.T)


def test_vocab_parallel_embedding_equals_the_full_lookup(rng) -> None:
    from mindspore import Tensor

    from vms_plugin.layers.parallel import VocabParallelEmbedding

    table = rng.standard_normal((40, 8)).astype(np.float32)
    ids = np.array([0, 9, 10, 39, 21, 21, 30], dtype=np.int32)  # every rank's range, and repeats
    for output in run_ranks(lambda group: VocabParallelEmbedding(table, group)(Tensor(ids))):
        np.testing.assert_array_equal(output, table[ids])


def test_a_dimension_that_does_not_split_evenly_is_refused() -> None:
    from vms_plugin.layers.parallel import shard

    class ThreeRanks:
        rank, world_size = 0, 3

    with pytest.raises(ValueError, match="dimension of size 10 does not split over 3 ranks"):
        shard(np.zeros((10, 4)), ThreeRanks(), 0)
