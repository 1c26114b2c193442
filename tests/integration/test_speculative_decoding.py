"""Speculative decoding with prompt lookup (`--speculative-config '{"method": "ngram", ...}'`) through vLLM's `LLM()`:
the same 16 requests without speculation and with it, in one process (conftest.speculative_greedy)."""

from .conftest import REPETITIVE_PROMPTS, SPECULATIVE_NGRAM


def test_greedy_output_with_ngram_speculation_is_token_identical_to_without(speculative_greedy) -> None:
    off, ngram = speculative_greedy["speculative-off"], speculative_greedy["speculative-ngram"]
    assert ngram["platform"] == "MindSporePlatform"
    assert len(off["token_ids"]) == 16
    for index, (plain, speculated) in enumerate(zip(off["token_ids"], ngram["token_ids"], strict=True)):
        assert speculated == plain, f"prompt {index}: speculation changed greedy output"


def test_proposals_were_verified_and_accepted_as_vllms_metrics_count_them(speculative_greedy) -> None:
    counters = speculative_greedy["speculative-ngram"]["counters"]
    drafts, proposed = counters["vllm:spec_decode_num_drafts"], counters["vllm:spec_decode_num_draft_tokens"]
    accepted = counters["vllm:spec_decode_num_accepted_tokens"]
    assert drafts > 0 and proposed <= drafts * SPECULATIVE_NGRAM["num_speculative_tokens"]
    # The repetitive half of the prompts has its continuation in the prompt: many proposals are right.
    assert accepted / proposed > 0.2, f"acceptance rate {accepted / proposed:.2f} ({accepted} of {proposed})"
    assert len(REPETITIVE_PROMPTS) == 8
    assert "vllm:spec_decode_num_drafts" not in speculative_greedy["speculative-off"]["counters"]


def test_seeded_sampling_under_speculation_is_reproducible(speculative_greedy) -> None:
    sampled = speculative_greedy["speculative-ngram"]["sampled"]
    assert sampled["seed-1"] == sampled["seed-1-again"]
    greedy = speculative_greedy["speculative-ngram"]["token_ids"]
    assert [completion["token_ids"] for completion in sampled["seed-1"]] != greedy  # it did sample


def test_structured_output_under_speculation_equals_structured_output_without(speculative_greedy) -> None:
    """Each proposed token is checked against the grammar: the bitmask has a row per draft."""
    off, ngram = (
        speculative_greedy[name]["sampled"]["json-schema"] for name in ("speculative-off", "speculative-ngram")
    )
    assert [c["token_ids"] for c in ngram] == [c["token_ids"] for c in off]
    assert all(c["text"].startswith("{") for c in ngram[::2])
