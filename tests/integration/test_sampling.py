"""Sampling through vms_plugin with vLLM's SamplingParams, on the default model (8 prompts x 32 tokens a set).

Each named set of conftest.SAMPLING_SETS is one batch; these tests compare sets with each other, with the greedy
batch and with vLLM's own CPU path.
"""

import json

import jsonschema
import pytest

from .conftest import ALLOWED_TOKENS, BIASED_TOKEN, CITY_CHOICES, CITY_SCHEMA, DEFAULT_MODEL, STRUCTURED_SETS

pytestmark = pytest.mark.integration

LOGPROB_TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def runs(plugin_greedy) -> dict[str, list[dict]]:
    return plugin_greedy[DEFAULT_MODEL]["sampled"]


def token_ids(completions: list[dict]) -> list[list[int]]:
    return [completion["token_ids"] for completion in completions]


def test_the_same_seed_gives_the_same_tokens_twice(runs) -> None:
    assert token_ids(runs["seed-1"]) == token_ids(runs["seed-1-again"])


def test_different_seeds_give_different_tokens(runs) -> None:
    assert token_ids(runs["seed-1"]) != token_ids(runs["seed-2"])
    assert token_ids(runs["seed-1"]) != token_ids(runs["temperature-0"])  # seeded sampling is not greedy


def test_temperature_zero_and_top_k_one_are_greedy(runs, plugin_greedy) -> None:
    greedy = plugin_greedy[DEFAULT_MODEL]["token_ids"]
    assert token_ids(runs["temperature-0"]) == greedy
    assert token_ids(runs["top-k-1"]) == greedy


def test_each_row_of_a_mixed_batch_samples_with_its_own_parameters(runs, plugin_greedy) -> None:
    greedy, seeded = plugin_greedy[DEFAULT_MODEL]["token_ids"], token_ids(runs["seed-1"])
    for index, tokens in enumerate(token_ids(runs["mixed"])):
        assert tokens == (greedy if index % 2 == 0 else seeded)[index], f"row {index}"


def test_logit_bias_and_allowed_token_ids_shape_the_choice(runs) -> None:
    assert {token for tokens in token_ids(runs["logit-bias"]) for token in tokens} == {BIASED_TOKEN}
    assert {token for tokens in token_ids(runs["allowed-tokens"]) for token in tokens} <= set(ALLOWED_TOKENS)


def test_penalties_and_min_p_change_seeded_output(runs) -> None:
    penalised = token_ids(runs["penalties"])
    assert all(len(tokens) == 32 for tokens in penalised)
    assert penalised != token_ids(runs["seed-1"])


def test_logprobs_agree_with_vllm_cpu_path(runs, vllm_cpu_greedy) -> None:
    theirs = vllm_cpu_greedy[DEFAULT_MODEL]["sampled"]["logprobs"]
    compared = 0
    for prompt, (ours, reference) in enumerate(zip(runs["logprobs"], theirs, strict=True)):
        assert ours["token_ids"] == reference["token_ids"], f"prompt {prompt}"
        for step, (mine, other) in enumerate(zip(ours["logprobs"], reference["logprobs"], strict=True)):
            chosen = str(ours["token_ids"][step])
            assert mine[chosen][1] == other[chosen][1], f"prompt {prompt} step {step}: rank of the chosen token"
            for token in mine.keys() & other.keys():  # the top-5 sets may differ only by near-ties at the edge
                assert abs(mine[token][0] - other[token][0]) < LOGPROB_TOLERANCE, f"prompt {prompt} step {step}"
                compared += 1
            assert len(mine.keys() & other.keys()) >= 4
    assert compared >= 8 * 32 * 4


def test_prompt_logprobs_agree_with_vllm_cpu_path(runs, vllm_cpu_greedy, default_prompt_ids) -> None:
    theirs = vllm_cpu_greedy[DEFAULT_MODEL]["sampled"]["prompt-logprobs"]
    for prompt, (ids, ours, reference) in enumerate(
        zip(default_prompt_ids, runs["prompt-logprobs"], theirs, strict=True)
    ):
        assert len(ours["prompt_logprobs"]) == len(ids) - 1, (
            f"prompt {prompt}: one entry per prompt token after the first"
        )
        for position, (mine, other) in enumerate(
            zip(ours["prompt_logprobs"], reference["prompt_logprobs"], strict=True)
        ):
            actual = str(ids[position + 1])
            assert actual in mine, f"prompt {prompt} position {position}: the prompt token itself is reported"
            assert mine[actual][1] == other[actual][1], f"prompt {prompt} position {position}: rank"
            for token in mine.keys() & other.keys():
                assert abs(mine[token][0] - other[token][0]) < LOGPROB_TOLERANCE, f"prompt {prompt} position {position}"
            assert len(mine.keys() & other.keys()) >= 5  # the prompt token and at least 4 of the top 5 agree


def test_json_schema_rows_answer_valid_json_while_the_other_rows_stay_greedy(runs, plugin_greedy) -> None:
    greedy = plugin_greedy[DEFAULT_MODEL]["token_ids"]
    for index, completion in enumerate(runs["json-schema"]):
        if index % 2:
            assert completion["token_ids"] == greedy[index], f"row {index} has no grammar and must be greedy"
        else:
            assert completion["finish_reason"] == "stop", f"row {index}: the grammar should end it: {completion}"
            jsonschema.validate(json.loads(completion["text"]), CITY_SCHEMA)


def test_choice_answers_are_one_of_the_choices(runs) -> None:
    for completion in runs["choice"]:
        assert completion["finish_reason"] == "stop"
        assert completion["text"] in CITY_CHOICES


@pytest.mark.parametrize("name", STRUCTURED_SETS)
def test_structured_output_is_token_identical_to_vllm_cpu_path(name, runs, vllm_cpu_greedy) -> None:
    theirs = vllm_cpu_greedy[DEFAULT_MODEL]["sampled"][name]
    for prompt, (ours, reference) in enumerate(zip(runs[name], theirs, strict=True)):
        assert ours["token_ids"] == reference["token_ids"], f"{name}: prompt {prompt} differs from vLLM's CPU path"
