"""Tensor-parallel models run in one process: every rank in its own thread with its own shard of the checkpoint,
and an in-memory group that sums (or concatenates) what the ranks hand to each collective, as vLLM's process
group or HCCL would. Each rank's logits must equal the single-rank model's through prefill and paged decode.

MindSpore's PyNative runtime is not safe to call from several threads at once (a third of runs failed with
"The pointer[runtime_info] is null"), so one rank computes at a time: a rank holds the compute lock except while
it waits at a collective's barrier. The real thing, vLLM's executor with one process per rank, is tested in
tests/integration/test_tensor_parallel_serving.py.

Tolerance: 1e-4 absolute on logits, the bound tensor parallel is held to (the ranks' partial sums are added in
another order: measured ~2e-6 with the AVX2 kernels, 1.0e-5 with the AVX-512 ones).
"""

import threading

import numpy as np
import pytest
from offline_model import BLOCK_SIZE, mindspore_step
from tiny_models import (
    ARCHITECTURES,
    DEEPSEEK_ARCHITECTURES,
    GLM_ARCHITECTURE,
    MOE_ARCHITECTURES,
    MOE_SIZES,
    save_tiny_model,
)

TOLERANCE = 1e-4


class InMemoryGroup:
    """One rank's view of a group whose collectives meet at a barrier and combine every rank's tensor."""

    def __init__(self, rank: int, world_size: int, shared: dict) -> None:
        self.rank, self.world_size, self.shared = rank, world_size, shared

    def _exchange(self, x, combine):
        from mindspore import Tensor

        slots, barrier, compute = self.shared["slots"], self.shared["barrier"], self.shared["compute"]
        slots[self.rank] = x.asnumpy()
        _wait_unlocked(barrier, compute)
        result = Tensor(combine([slots[r] for r in range(self.world_size)]))
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


def run_ranks(world_size: int, rank_main, make_group=InMemoryGroup) -> list:
    """rank_main(group) on `world_size` threads, one per rank, each with make_group(rank, world_size, shared);
    their results in rank order."""
    shared = {"slots": {}, "barrier": threading.Barrier(world_size, timeout=120), "compute": threading.Lock()}
    outputs, errors = [None] * world_size, []

    def run(rank: int) -> None:
        try:
            with shared["compute"]:
                outputs[rank] = rank_main(make_group(rank, world_size, shared))
        except Exception as error:  # surfaced below; a thread's exception would otherwise vanish
            errors.append(error)
            shared["barrier"].abort()

    threads = [threading.Thread(target=run, args=(rank,)) for rank in range(world_size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return outputs


def prefill_and_decode(model_dir, group=None, vocab: int = 512, expert_parallel: bool = False) -> list[np.ndarray]:
    """Logits of a batched prefill of three prompts, then of three decode steps through the paged KV cache."""
    from vms_plugin.models.registry import build_model
    from vms_plugin.worker.batch import ScheduledRequest

    model = build_model(model_dir, group=group, expert_parallel=expert_parallel)
    for attention in model.attention_layers():
        attention.allocate_kv_cache(16, BLOCK_SIZE)
    rng = np.random.default_rng(0)
    sequences = [rng.integers(0, vocab, size=n).tolist() for n in (21, 5, 13)]
    blocks = [[3, 7], [1], [9, 0]]
    outputs = [mindspore_step(model, [ScheduledRequest(s, 0, b, True) for s, b in zip(sequences, blocks, strict=True)])]
    for _ in range(3):
        tokens = [int(rng.integers(0, vocab)) for _ in sequences]
        step = [ScheduledRequest([t], len(s), b, True) for t, s, b in zip(tokens, sequences, blocks, strict=True)]
        outputs.append(mindspore_step(model, step))
        for sequence, token in zip(sequences, tokens, strict=True):
            sequence.append(token)
    return outputs


def assert_ranks_match_one_rank(
    model_dir, world_size: int, vocab: int = 512, make_group=InMemoryGroup, expert_parallel: bool = False
) -> None:
    expected = prefill_and_decode(model_dir, vocab=vocab)
    outputs = run_ranks(
        world_size, lambda group: prefill_and_decode(model_dir, group, vocab, expert_parallel), make_group
    )
    for rank_outputs in outputs:
        for step, (ours, reference) in enumerate(zip(rank_outputs, expected, strict=True)):
            assert ours.shape == reference.shape, f"step {step}"
            np.testing.assert_allclose(ours, reference, atol=TOLERANCE, rtol=0, err_msg=f"step {step}")


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_two_ranks_each_with_half_the_heads_match_one_rank(architecture, tmp_path) -> None:
    model_dir = save_tiny_model(architecture, tmp_path / "model", num_attention_heads=4, num_key_value_heads=2)
    assert_ranks_match_one_rank(model_dir, world_size=2)


@pytest.mark.parametrize("expert_parallel", [False, True], ids=["experts-split-by-features", "expert-parallel"])
@pytest.mark.parametrize("architecture", [*MOE_ARCHITECTURES, GLM_ARCHITECTURE])
def test_mixture_of_experts_over_two_ranks_matches_one_rank(architecture, expert_parallel, tmp_path) -> None:
    """Attention split by heads; the experts split by their features (each rank holds every expert's half) or,
    with expert parallelism, between the ranks (4 whole experts each of the 8); a shared expert by its features;
    the router (and GLM's correction bias) on every rank; the partial sums all-reduced."""
    sizes = {**MOE_SIZES, "num_attention_heads": 4, "num_key_value_heads": 2}
    model_dir = save_tiny_model(architecture, tmp_path / "model", **sizes)
    assert_ranks_match_one_rank(model_dir, world_size=2, expert_parallel=expert_parallel)


@pytest.mark.parametrize("architecture", DEEPSEEK_ARCHITECTURES)
def test_deepseek_over_two_ranks_matches_one_rank(architecture, tiny_deepseek_dirs) -> None:
    """Latent attention split by heads (each rank caches the whole latent, which its heads read), the experts
    split between the ranks."""
    assert_ranks_match_one_rank(tiny_deepseek_dirs[architecture], world_size=2, expert_parallel=True)


def test_four_ranks_share_kv_heads_and_pad_a_vocabulary_that_does_not_split(tmp_path) -> None:
    # 2 KV heads over 4 ranks: each is held by two ranks; 509 tokens: 128 rows per rank, the last 3 of them zeros.
    model_dir = save_tiny_model(
        "Qwen2ForCausalLM", tmp_path / "model", num_attention_heads=4, num_key_value_heads=2, vocab_size=509
    )
    assert_ranks_match_one_rank(model_dir, world_size=4, vocab=509)


def test_a_size_that_does_not_divide_the_heads_is_refused_naming_them() -> None:
    from vms_plugin.layers.parallel import Partition

    with pytest.raises(ValueError, match=r"--tensor-parallel-size 2 does not divide the model's 9 attention heads"):
        Partition(0, 2, heads=9, kv_heads=3, head_dim=64, intermediate=1536, vocab=49152)
    with pytest.raises(ValueError, match=r"3 KV heads"):
        Partition(0, 2, heads=6, kv_heads=3, head_dim=64, intermediate=1536, vocab=49152)


def test_each_rank_holds_its_slice_of_the_checkpoint_tensors() -> None:
    from vms_plugin.layers.parallel import Part, Partition

    weight = np.arange(8 * 6).reshape(8, 6)
    ranks = [Partition(rank, 4, heads=4, kv_heads=2, head_dim=2, intermediate=8, vocab=7) for rank in range(4)]
    assert [p.query_rows() for p in ranks] == [Part(0, 2 * r, 2 * r + 2) for r in range(4)]
    assert [p.kv_rows() for p in ranks] == [Part(0, 0, 2), Part(0, 0, 2), Part(0, 2, 4), Part(0, 2, 4)]
    np.testing.assert_array_equal(ranks[1].columns(ranks[1].query_rows()).of(weight), weight[:, 2:4])
    last_rows = ranks[3].vocab_rows().of(weight[:7])  # rows 6..7 of a 7-row table: row 6, then zeros
    np.testing.assert_array_equal(last_rows, np.vstack([weight[6:7], np.zeros((1, 6), int)]))
    biases = [p.once(6).of(np.ones(6)) for p in ranks]
    np.testing.assert_array_equal(np.sum(biases, axis=0), np.ones(6))  # added once over the ranks
