"""Verifying proposed tokens with vLLM's rejection sampler on logits laid out as the runner lays them out."""

import pytest
import torch
from vllm.sampling_params import SamplingParams

from vms_plugin.worker.sampling import BatchSampler, SamplingState

SURE = 30.0  # a logit that makes its token all but certain at temperature 1


@pytest.fixture(scope="module")
def sampler(tiny_model_dirs) -> BatchSampler:
    from vllm.config import set_current_vllm_config
    from vllm.engine.arg_utils import EngineArgs
    from vllm.platforms import current_platform

    current_platform.register_triton_kernel_overrides()  # what each worker does at start
    speculative = {"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 3}
    config = EngineArgs(
        model=str(tiny_model_dirs["LlamaForCausalLM"]),
        skip_tokenizer_init=True,
        max_model_len=128,
        speculative_config=speculative,
    ).create_engine_config()
    with set_current_vllm_config(config):
        return BatchSampler(config)


def rows_preferring(sampler: BatchSampler, *token_ids: int) -> torch.Tensor:
    """Logits rows, row i all but certain of token_ids[i]."""
    logits = torch.zeros(len(token_ids), sampler.vocab_size)
    logits[range(len(token_ids)), list(token_ids)] = SURE
    return logits


def states(params: SamplingParams, count: int) -> list[SamplingState]:
    return [SamplingState.for_request(params, [1, 2, 3], []) for _ in range(count)]


def test_greedy_keeps_the_drafts_the_model_agrees_with_then_its_own_token(sampler) -> None:
    # Request 0 verifies drafts 7, 8, 9: the model agrees with 7, then prefers 5 over 8. Request 1 verifies 4, 6, which
    # the model agrees with, and gets the bonus 11. Request 2 has no drafts this step.
    logits = torch.cat(
        [rows_preferring(sampler, 7, 5, 9, 2), rows_preferring(sampler, 4, 6, 11), rows_preferring(sampler, 13)]
    )
    tokens, logprobs = sampler.sample(logits, states(SamplingParams(temperature=0.0), 3), [[7, 8, 9], [4, 6], []])
    assert tokens == [[7, 5], [4, 6, 11], [13]]
    assert logprobs is None


def test_sampled_requests_replace_a_rejected_draft_with_a_token_of_the_models_distribution(sampler) -> None:
    # At temperature 1 the model is all but certain of 7 then 5: draft 7 is accepted, draft 8 is rejected and the
    # token drawn instead comes from the model's distribution with 8 taken out, i.e. 5.
    params = SamplingParams(temperature=1.0, seed=3)
    tokens, _ = sampler.sample(rows_preferring(sampler, 7, 5, 9, 2), states(params, 1), [[7, 8, 9]])
    assert tokens == [[7, 5]]


def test_seeded_requests_verifying_drafts_draw_the_same_tokens_every_time(sampler) -> None:
    torch.manual_seed(0)
    logits = torch.randn(7, sampler.vocab_size)  # request 0: 4 rows (3 drafts), request 1: 3 rows (2 drafts)
    params = [SamplingParams(temperature=0.8, top_p=0.9, top_k=40, seed=seed) for seed in (1, 2)]

    def draw() -> list[list[list[int]]]:
        rows = [SamplingState.for_request(p, [1, 2, 3], []) for p in params]
        return [sampler.sample(logits.clone(), rows, [[5, 6, 7], [8, 9]])[0] for _ in range(3)]

    first = draw()
    assert draw() == first
    assert len({str(step) for step in first}) > 1  # each step draws afresh from the request's stream


def test_logprobs_of_every_kept_token_are_returned_per_request(sampler) -> None:
    logits = torch.cat([rows_preferring(sampler, 7, 5, 9, 2), rows_preferring(sampler, 13)])
    params = SamplingParams(temperature=0.0, logprobs=2)
    tokens, logprobs = sampler.sample(logits, states(params, 2), [[7, 8, 9], []])
    assert tokens == [[7, 5], [13]]
    assert logprobs.cu_num_generated_tokens == [0, 2, 3]
    assert logprobs.logprob_token_ids[:, 0].tolist() == [7, 5, 13]  # each kept token's own logprob comes first
