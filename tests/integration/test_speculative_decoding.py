"""Speculative decoding through vLLM's `LLM()`: the same 16 requests on the default model without speculation, with
a draft model (its own first 20 layers) and with prompt lookup (`ngram`), in one process (conftest.speculative_greedy).
"""

import pytest

from .conftest import REPETITIVE_PROMPTS, SPECULATIVE_NGRAM

SPECULATING = ("speculative-draft-model", "speculative-ngram")
# Share of proposed tokens accepted at least: a third of the draft model's layers are missing, so it is often
# wrong; the repetitive half of the prompts has its continuation in the prompt for prompt lookup.
LEAST_ACCEPTED = {"speculative-draft-model": 0.05, "speculative-ngram": 0.2}


@pytest.mark.parametrize("name", SPECULATING)
def test_greedy_output_with_speculation_is_token_identical_to_without(speculative_greedy, name) -> None:
    off, speculated = speculative_greedy["speculative-off"], speculative_greedy[name]
    assert speculated["platform"] == "MindSporePlatform"
    assert len(off["token_ids"]) == 16
    for index, (plain, ours) in enumerate(zip(off["token_ids"], speculated["token_ids"], strict=True)):
        assert ours == plain, f"{name}, prompt {index}: speculation changed greedy output"


@pytest.mark.parametrize("name", SPECULATING)
def test_proposals_were_verified_and_accepted_as_vllms_metrics_count_them(speculative_greedy, name) -> None:
    counters = speculative_greedy[name]["counters"]
    drafts, proposed = counters["vllm:spec_decode_num_drafts"], counters["vllm:spec_decode_num_draft_tokens"]
    accepted = counters["vllm:spec_decode_num_accepted_tokens"]
    assert drafts > 0 and proposed <= drafts * SPECULATIVE_NGRAM["num_speculative_tokens"]
    rate = accepted / proposed
    assert rate > LEAST_ACCEPTED[name], f"{name}: acceptance rate {rate:.2f} ({accepted} of {proposed})"
    assert len(REPETITIVE_PROMPTS) == 8
    assert "vllm:spec_decode_num_drafts" not in speculative_greedy["speculative-off"]["counters"]


@pytest.mark.parametrize("name", SPECULATING)
def test_seeded_sampling_under_speculation_is_reproducible(speculative_greedy, name) -> None:
    sampled = speculative_greedy[name]["sampled"]
    assert sampled["seed-1"] == sampled["seed-1-again"]
    greedy = speculative_greedy[name]["token_ids"]
    assert [completion["token_ids"] for completion in sampled["seed-1"]] != greedy  # it did sample


@pytest.mark.parametrize("name", SPECULATING)
def test_structured_output_under_speculation_equals_structured_output_without(speculative_greedy, name) -> None:
    """Each proposed token is checked against the grammar: the bitmask has a row per draft."""
    off, ours = (speculative_greedy[job]["sampled"]["json-schema"] for job in ("speculative-off", name))
    assert [c["token_ids"] for c in ours] == [c["token_ids"] for c in off]
    assert all(c["text"].startswith("{") for c in ours[::2])


def test_a_draft_model_under_chunked_prefill_prefix_caching_and_preemption_changes_nothing(
    speculative_greedy, transformers_greedy, scheduler_jobs
) -> None:
    """The tiny Llama as its own draft model, 32-token steps, a shared 48-token prefix run twice, 12 KV blocks: the
    draft's cache follows the model's through chunks, shared blocks and recomputation after preemption."""
    run = speculative_greedy["speculative-scheduler"]
    assert run["token_ids"] == transformers_greedy["prefix-caching"]  # the same prompts, model and lengths
    counters = run["counters"]
    assert counters["vllm:num_preemptions"] > 0 and counters["vllm:prefix_cache_hits"] >= 7 * 48
    accepted, proposed = counters["vllm:spec_decode_num_accepted_tokens"], counters["vllm:spec_decode_num_draft_tokens"]
    assert accepted / proposed > 0.9, f"the model as its own draft: {accepted} of {proposed} accepted"
