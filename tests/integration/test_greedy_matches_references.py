"""The default model through vLLM with vms_plugin: greedy output token-identical to independent references."""

import pytest

from .conftest import NEW_TOKENS, PROMPTS

pytestmark = pytest.mark.integration


def test_plugin_platform_is_the_one_that_ran(plugin_greedy, vllm_cpu_greedy) -> None:
    assert plugin_greedy["platform"] == "MindSporePlatform"
    assert vllm_cpu_greedy["platform"] == "CpuPlatform"


def test_batched_greedy_is_token_identical_to_transformers(plugin_greedy, transformers_greedy) -> None:
    assert len(plugin_greedy["token_ids"]) == len(PROMPTS)
    for index, (ours, reference) in enumerate(zip(plugin_greedy["token_ids"], transformers_greedy, strict=True)):
        assert len(ours) == NEW_TOKENS
        assert ours == reference, f"prompt {index} ({PROMPTS[index]!r}) differs from transformers"


def test_batched_greedy_is_token_identical_to_vllm_cpu_path(plugin_greedy, vllm_cpu_greedy) -> None:
    for index, (ours, reference) in enumerate(
        zip(plugin_greedy["token_ids"], vllm_cpu_greedy["token_ids"], strict=True)
    ):
        assert ours == reference, f"prompt {index} ({PROMPTS[index]!r}) differs from vLLM's own CPU path"


def test_prompts_really_differ_in_length(default_prompt_ids) -> None:
    assert len({len(ids) for ids in default_prompt_ids}) >= 6
