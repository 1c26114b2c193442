"""Mixture-of-experts models served by `vms serve` as a user runs them: a chat request, then 16 concurrent streams;
a tiny Qwen3-MoE and a tiny DeepSeek-V3 (latent attention, group-limited sigmoid routing, shared experts)."""

import asyncio
import json

import httpx
import pytest

from integration.served import serving

pytestmark = pytest.mark.integration

STREAMS = 16
TOKENS = 24
REQUEST_BOUND_S = 120
ENV = {"VMS_MAX_MODEL_LEN": "512", "VMS_KV_CACHE_MEMORY": "256MiB"}


async def streamed_completion(client: httpx.AsyncClient, base_url: str, model: str, prompt: str) -> tuple[int, int]:
    """(HTTP status, completion tokens the final usage chunk reports) of one streamed completion."""
    body = {"model": model, "prompt": prompt, "max_tokens": TOKENS, "ignore_eos": True, "stream": True}
    body["stream_options"] = {"include_usage": True}
    usage = 0
    async with client.stream("POST", base_url + "/v1/completions", json=body) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: {"):
                usage = (json.loads(line[6:]).get("usage") or {}).get("completion_tokens", usage)
        return response.status_code, usage


async def concurrent_streams(base_url: str, model: str) -> list[tuple[int, int]]:
    async with httpx.AsyncClient(timeout=REQUEST_BOUND_S) as client:
        prompts = [f"Item {i}: the" for i in range(STREAMS)]
        return await asyncio.gather(*(streamed_completion(client, base_url, model, p) for p in prompts))


SERVED = {"Qwen3-MoE": "served_tiny_moe_model_dir", "DeepSeek-V3": "served_tiny_deepseek_model_dir"}


@pytest.mark.parametrize("name", SERVED)
def test_a_mixture_of_experts_model_answers_a_chat_and_concurrent_streams(name, request, tmp_path, measurement) -> None:
    model = str(request.getfixturevalue(SERVED[name]))
    with serving(tmp_path, ENV, "--model", model) as served:
        chat = httpx.post(
            served.base_url + "/v1/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": TOKENS},
            timeout=REQUEST_BOUND_S,
        )
        streams = asyncio.run(concurrent_streams(served.base_url, model))
        status = served.status()
        log = served.log.read_text()
    assert "vms_plugin: MindSpore" in log and status["model"] == model and status["restarts"] == 0
    assert chat.status_code == 200, chat.text
    assert chat.json()["choices"][0]["message"]["content"]
    assert streams == [(200, TOKENS)] * STREAMS
    measurement(f"tiny {name} served: 1 chat request, then {STREAMS} concurrent streams of {TOKENS} tokens")
