"""Greedy generation through vLLM with vms_plugin is token-identical to independent references.

Models: the default SmolLM2-135M-Instruct (8 prompts x 32 tokens) and tiny random checkpoints of every
architecture (16 prompts x 24 tokens); each set runs as one batch.
"""

import pytest

from .conftest import MODELS

# vLLM's CPU path and the tensor-parallel runs (compared in test_tensor_parallel_serving.py) start first, so they
# run while plugin_greedy does.
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("vllm_cpu_greedy_run", "tensor_parallel_greedy_run")]


def test_plugin_platform_is_the_one_that_ran(plugin_greedy, vllm_cpu_greedy) -> None:
    assert set(vllm_cpu_greedy) == set(MODELS)
    assert {result["platform"] for result in plugin_greedy.values()} == {"MindSporePlatform"}
    assert {result["platform"] for result in vllm_cpu_greedy.values()} == {"CpuPlatform"}


@pytest.mark.parametrize("model", MODELS)
def test_batched_greedy_is_token_identical_to_transformers(model, greedy_jobs, plugin_greedy, transformers_greedy):
    ours = plugin_greedy[model]["token_ids"]
    assert len(ours) == len(greedy_jobs[model]["prompts"])
    for index, (tokens, reference) in enumerate(zip(ours, transformers_greedy[model], strict=True)):
        assert len(tokens) == greedy_jobs[model]["max_tokens"]
        assert tokens == reference, f"{model}: prompt {index} differs from transformers"


@pytest.mark.parametrize("model", MODELS)
def test_batched_greedy_is_token_identical_to_vllm_cpu_path(model, plugin_greedy, vllm_cpu_greedy) -> None:
    pairs = zip(plugin_greedy[model]["token_ids"], vllm_cpu_greedy[model]["token_ids"], strict=True)
    for index, (tokens, reference) in enumerate(pairs):
        assert tokens == reference, f"{model}: prompt {index} differs from vLLM's own CPU path"


def test_prompts_really_differ_in_length(greedy_jobs) -> None:
    for job in greedy_jobs.values():
        assert len({len(ids) for ids in job["prompts"]}) >= 6
