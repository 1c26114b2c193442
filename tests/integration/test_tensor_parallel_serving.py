"""Tensor parallel through vLLM's multiprocessing executor: one worker process per rank, each holding its part of
the checkpoint and reducing through vLLM's tensor-parallel process group.

Greedy output over 2 ranks (tiny Llama, Qwen2 and Qwen3, Qwen2-MoE with its experts split by features, Qwen3-MoE
and DeepSeek-V3 with expert parallelism; 16 prompts x 24 tokens in one batch) and over 3 (the default model; 8
prompts x 32 tokens) is token-identical to one rank, and the top-5 logprobs of every generated position agree
within 1e-4 (measured: ~6e-6 on the tiny models, ~7e-5 on the default model).
"""

import pytest
from transformers_argmax import transformers_argmax

from .conftest import DEFAULT_MODEL, TENSOR_PARALLEL_SIZES, TP_SCHEDULER_JOB, TP_SPECULATIVE_JOBS

pytestmark = pytest.mark.integration

LOGPROB_TOLERANCE = 1e-4


def largest_logprob_difference(ours: dict, single: list[dict]) -> tuple[float, int]:
    """The largest difference between the top-5 logprobs of a greedy run over several ranks and one rank's (the
    same tokens), and how many were compared."""
    largest, compared = 0.0, 0
    for tokens, positions, single_prompt in zip(ours["token_ids"], ours["logprobs"], single, strict=True):
        assert tokens == single_prompt["token_ids"]
        for ours_position, single_position in zip(positions, single_prompt["logprobs"], strict=True):
            for token, (logprob, _) in single_position.items():
                if token in ours_position:  # a near-tie at the 5th place may swap which token is listed
                    largest = max(largest, abs(ours_position[token][0] - logprob))
                    compared += 1
    assert compared > 0
    return largest, compared


def _single_rank_job(name: str) -> str:
    return name.split("-", 1)[1]


@pytest.mark.parametrize("job", TENSOR_PARALLEL_SIZES)
def test_greedy_over_several_ranks_is_token_identical_to_one_rank(job, tensor_parallel_greedy, plugin_greedy):
    ours, single = tensor_parallel_greedy[job], plugin_greedy[_single_rank_job(job)]
    assert ours["platform"] == "MindSporePlatform"
    assert [worker["rank"] for worker in ours["workers"]] == list(range(TENSOR_PARALLEL_SIZES[job]))
    for index, (tokens, reference) in enumerate(zip(ours["token_ids"], single["token_ids"], strict=True)):
        assert tokens == reference, f"{job}: prompt {index} differs from one rank"


@pytest.mark.parametrize("job", TENSOR_PARALLEL_SIZES)
def test_logprobs_over_several_ranks_match_one_rank(job, tensor_parallel_greedy, plugin_greedy, measurement):
    single = plugin_greedy[_single_rank_job(job)]["sampled"]["logprobs"]  # greedy too, with top-5 logprobs
    largest, compared = largest_logprob_difference(tensor_parallel_greedy[job], single)
    measurement(f"tensor parallel {job}: largest logprob difference from one rank {largest:.1e} ({compared} compared)")
    assert largest < LOGPROB_TOLERANCE


def test_each_rank_holds_its_share_of_the_default_model(tensor_parallel_greedy, plugin_greedy, measurement) -> None:
    (single,) = plugin_greedy[DEFAULT_MODEL]["workers"]
    ranks = tensor_parallel_greedy[f"tp3-{DEFAULT_MODEL}"]["workers"]
    for worker in ranks:
        # The vocabulary splits evenly over 3; only the 64-column panels' padding adds a little.
        assert worker["parameter_bytes"] <= single["parameter_bytes"] / 3 * 1.01
    peak = max(worker["peak_rss_bytes"] for worker in ranks)
    measurement(
        f"tensor parallel 3 on {DEFAULT_MODEL}: parameters per rank {ranks[0]['parameter_bytes'] / 2**20:.0f} MiB "
        f"(one rank {single['parameter_bytes'] / 2**20:.0f} MiB); peak RSS per rank {peak / 2**20:.0f} MiB "
        f"(one rank {single['peak_rss_bytes'] / 2**20:.0f} MiB, {peak / single['peak_rss_bytes']:.2f}x)"
    )
    assert peak < single["peak_rss_bytes"]


@pytest.mark.parametrize("name", [TP_SCHEDULER_JOB, *TP_SPECULATIVE_JOBS])
def test_chunked_prefill_prefix_caching_and_preemption_over_two_ranks(
    tensor_parallel_greedy, tensor_parallel_jobs, name
):
    """Also under speculative decoding: every rank verifies, proposes (a draft model split over the ranks as the
    model is) and keeps the same tokens."""
    job = tensor_parallel_jobs[name]
    result = tensor_parallel_greedy[name]
    reference = transformers_argmax(job["model"], job["prompts"], job["max_tokens"])
    for index, (tokens, expected) in enumerate(zip(result["token_ids"], reference, strict=True)):
        assert tokens == expected, f"prompt {index} differs from transformers"
    assert min(len(prompt) for prompt in job["prompts"]) > job["engine_args"]["max_num_batched_tokens"]
    assert result["counters"]["vllm:prefix_cache_hits"] > 0
    assert result["counters"]["vllm:num_preemptions"] > 0
    if name != TP_SCHEDULER_JOB:
        assert result["counters"]["vllm:spec_decode_num_drafts"] > 0
