"""A served engine whose KV cache holds a few requests at a time, given 48 long ones at once: vLLM's scheduler
preempts and resumes them, and every answer is whole and equal, token for token, to the same request run alone.
A prompt that can never fit (longer than the model's context) is refused with 400; one that fits is served, its
max_tokens capped by what is left of the context, as vLLM does."""

import asyncio
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from integration.served import Served, parse_metric, serving

pytestmark = pytest.mark.integration

BLOCKS, BLOCK_SIZE, MAX_MODEL_LEN = 24, 16, 256  # 384 tokens of KV: about six of the requests below at a time
REQUESTS, NEW_TOKENS = 48, 32
ARGS = ("--", "--num-gpu-blocks-override", str(BLOCKS), "--block-size", str(BLOCK_SIZE), "--no-enable-prefix-caching")


@pytest.fixture(scope="module")
def served(served_tiny_qwen3_dir, tmp_path_factory) -> Iterator[Served]:
    env = {"VMS_DTYPE": "float32", "VMS_MAX_MODEL_LEN": str(MAX_MODEL_LEN)}
    with serving(tmp_path_factory.mktemp("kv-pressure"), env, "--model", str(served_tiny_qwen3_dir), *ARGS) as run:
        yield run


def bodies(model: str) -> list[dict]:
    rng = np.random.default_rng(21)
    return [
        {
            "model": model,
            "prompt": rng.integers(100, 40_000, size=int(length)).tolist(),  # token ids
            "max_tokens": NEW_TOKENS,
            "temperature": 0,
            "ignore_eos": True,
            "logprobs": 0,
            "return_tokens_as_token_ids": True,
        }
        for length in rng.integers(12, 40, REQUESTS)
    ]


def answer(response: httpx.Response) -> tuple[str, list[str]]:
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    return choice["finish_reason"], choice["logprobs"]["tokens"]


async def together(url: str, requests: list[dict]) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=600) as client:
        return await asyncio.gather(*(client.post(url, json=body) for body in requests))


def test_48_long_requests_over_a_small_kv_cache_are_preempted_and_answer_as_alone(served: Served, measurement) -> None:
    model = served.status()["model"]
    url = served.base_url + "/v1/completions"
    requests = bodies(model)
    alone = [answer(httpx.post(url, json=body, timeout=300)) for body in requests]
    before = parse_metric(httpx.get(served.base_url + "/metrics").text, "vllm:num_preemptions_total")
    crowded = [answer(response) for response in asyncio.run(together(url, requests))]
    after = parse_metric(httpx.get(served.base_url + "/metrics").text, "vllm:num_preemptions_total")
    assert all(reason == "length" and len(tokens) == NEW_TOKENS for reason, tokens in crowded)
    differing = [index for index, (one, other) in enumerate(zip(alone, crowded, strict=True)) if one != other]
    assert differing == [], f"{len(differing)} of {REQUESTS} answers differ from the same request alone"
    assert after - before > 0, "the KV cache never ran out: nothing shows preemption"
    measurement(f"KV pressure: {REQUESTS} requests over {BLOCKS} blocks, {after - before:.0f} preemptions")
    assert served.status()["restarts"] == 0


def test_a_prompt_longer_than_the_context_is_refused_with_400_and_the_engine_serves_on(served: Served) -> None:
    model = served.status()["model"]
    url = served.base_url + "/v1/completions"
    refused = httpx.post(url, json={"model": model, "prompt": [200] * (MAX_MODEL_LEN + 1), "max_tokens": 4}, timeout=60)
    assert refused.status_code == 400 and str(MAX_MODEL_LEN) in refused.text, refused.text
    fits = httpx.post(url, json={"model": model, "prompt": [200] * (MAX_MODEL_LEN - 10), "max_tokens": 64}, timeout=120)
    assert fits.status_code == 200 and fits.json()["usage"]["completion_tokens"] == 10, fits.text
