"""vLLM's chunked prefill, prefix caching and preemption, driving vms_plugin, change nothing in the output.

The reference is transformers' argmax loop on the same prompts: an unchunked, uncached, unpreempted run by an
independent implementation. vLLM's own counters show that each mechanism really happened.
"""

import pytest

from .conftest import CHUNK_TOKENS, DEEPSEEK_SCHEDULER_JOB, MOE_SCHEDULER_JOB, SCHEDULER_JOBS

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("job", [*SCHEDULER_JOBS, MOE_SCHEDULER_JOB, DEEPSEEK_SCHEDULER_JOB])
def test_output_is_token_identical_to_an_unchunked_uncached_unpreempted_run(job, plugin_greedy, transformers_greedy):
    assert plugin_greedy[job]["platform"] == "MindSporePlatform"
    for index, (ours, reference) in enumerate(
        zip(plugin_greedy[job]["token_ids"], transformers_greedy[job], strict=True)
    ):
        assert ours == reference, f"{job}: prompt {index} differs from transformers"


def test_chunked_prefill_really_split_every_prompt(scheduler_jobs) -> None:
    job = scheduler_jobs["chunked-prefill"]
    assert job["engine_args"]["max_num_batched_tokens"] == CHUNK_TOKENS
    assert min(len(prompt) for prompt in job["prompts"]) > CHUNK_TOKENS


def test_prefix_cache_served_the_shared_prefix(plugin_greedy) -> None:
    counters = plugin_greedy["prefix-caching"]["counters"]
    # 8 prompts share 48 tokens (3 blocks); the second pass finds whole prompts' full blocks cached too.
    assert counters["vllm:prefix_cache_hits"] >= 7 * 48


def test_requests_were_preempted_and_resumed(plugin_greedy) -> None:
    assert plugin_greedy["preemption"]["counters"]["vllm:num_preemptions"] > 0


@pytest.mark.parametrize("name", [MOE_SCHEDULER_JOB, DEEPSEEK_SCHEDULER_JOB])
def test_mixture_of_experts_and_latent_attention_models_were_chunked_cached_and_preempted(
    name, plugin_greedy, scheduler_jobs
) -> None:
    job = scheduler_jobs[name]
    assert min(len(prompt) for prompt in job["prompts"]) > job["engine_args"]["max_num_batched_tokens"]
    counters = plugin_greedy[name]["counters"]
    assert counters["vllm:prefix_cache_hits"] >= 7 * 48
    assert counters["vllm:num_preemptions"] > 0


def test_prompt_logprobs_gathered_over_chunks_match_transformers(plugin_greedy, scheduler_jobs) -> None:
    """Each prompt spans several chunks; every position's logprob of the next prompt token equals transformers'."""
    import torch
    from transformers import AutoModelForCausalLM

    job = scheduler_jobs["chunked-prefill"]
    model = AutoModelForCausalLM.from_pretrained(job["model"], dtype=torch.float32).eval()
    completions = plugin_greedy["chunked-prefill"]["sampled"]["prompt-logprobs"]
    for index, (prompt, completion) in enumerate(zip(job["prompts"], completions, strict=True)):
        with torch.no_grad():
            expected = model(torch.tensor([prompt])).logits[0].log_softmax(-1)
        positions = completion["prompt_logprobs"]
        assert len(positions) == len(prompt) - 1, f"prompt {index}"
        for position, entries in enumerate(positions):
            token = prompt[position + 1]
            logprob, rank = entries[str(token)]
            assert abs(logprob - float(expected[position, token])) < 1e-3, f"prompt {index} position {position}"
            # Rank: tokens whose logprob is within the tolerance of this one may order either way.
            reference = float(expected[position, token])
            surely_above = int((expected[position] > reference + 1e-3).sum())
            maybe_above = int((expected[position] > reference - 1e-3).sum()) - 1
            assert 1 + surely_above <= rank <= 1 + maybe_above, f"prompt {index} position {position}: rank {rank}"
