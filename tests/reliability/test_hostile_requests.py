"""Hostile requests to the OpenAI endpoint of a real `vms serve` are answered 4xx and harm nobody else.

While streams are generating, each bad request is sent; every one must get a 4xx (never a 5xx, never a hang) and
the streams in flight must still finish whole and equal to the same requests run alone. Afterwards the server
still answers a normal request.
"""

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from integration.served import Served, serving
from sse import data_events

pytestmark = pytest.mark.integration

MAX_MODEL_LEN = 512
ANSWER_BOUND_S = 30.0
STREAM_TOKENS = 96


@pytest.fixture(scope="module")
def server(default_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    arguments = ("--model", str(default_model_dir), "--served-model-name", "smollm2")
    with serving(tmp_path_factory.mktemp("hostile"), {}, *arguments, "--max-model-len", str(MAX_MODEL_LEN)) as served:
        yield served


def completion(prompt: str, **fields) -> dict:
    return {"model": "smollm2", "prompt": prompt, "max_tokens": 8, "temperature": 0, **fields}


# name -> (body as bytes, path): each is sent while streams are in flight.
HOSTILE: dict[str, tuple[bytes, str]] = {
    "prompt longer than max model len": (json.dumps(completion("word " * 2 * MAX_MODEL_LEN)).encode(), "completions"),
    "1 MB prompt": (json.dumps(completion("a" * (1 << 20))).encode(), "completions"),
    "max_tokens huge": (json.dumps(completion("Hi", max_tokens=10**9)).encode(), "completions"),
    "max_tokens negative": (json.dumps(completion("Hi", max_tokens=-5)).encode(), "completions"),
    "n huge": (json.dumps(completion("Hi", n=10**6)).encode(), "completions"),
    "unknown model": (json.dumps({**completion("Hi"), "model": "no-such-model"}).encode(), "completions"),
    "malformed JSON": (b'{"model": "smollm2", "prompt": ', "completions"),
    "invalid UTF-8": (b'{"model": "smollm2", "prompt": "\xff\xfe\xfa", "max_tokens": 4}', "completions"),
    "chat without messages": (json.dumps({"model": "smollm2"}).encode(), "chat/completions"),
    "chat message of the wrong type": (
        json.dumps({"model": "smollm2", "messages": [{"role": "user", "content": 42.5}]}).encode(),
        "chat/completions",
    ),
}


def stream_body(index: int) -> dict:
    return {**completion(f"Count from {index} upwards:"), "max_tokens": STREAM_TOKENS, "ignore_eos": True}


async def stream_text(client: httpx.AsyncClient, base_url: str, body: dict) -> str:
    pieces = []
    async with client.stream("POST", f"{base_url}/v1/completions", json={**body, "stream": True}) as response:
        assert response.status_code == 200
        async for data in data_events(response):
            if data != "[DONE]":
                pieces.append(json.loads(data)["choices"][0]["text"])
    return "".join(pieces)


async def hostile_while_streaming(base_url: str) -> tuple[list[str], dict[str, httpx.Response]]:
    async with httpx.AsyncClient(timeout=ANSWER_BOUND_S * 4) as client:
        streams = [asyncio.create_task(stream_text(client, base_url, stream_body(i))) for i in range(4)]
        await asyncio.sleep(1.0)  # the streams are generating
        answers = {}
        for name, (body, path) in HOSTILE.items():
            answers[name] = await client.post(
                f"{base_url}/v1/{path}",
                content=body,
                headers={"content-type": "application/json"},
                timeout=ANSWER_BOUND_S,
            )
        return await asyncio.gather(*streams), answers


@pytest.fixture(scope="module")
def outcome(server: Served) -> tuple[list[str], dict[str, httpx.Response]]:
    return asyncio.run(hostile_while_streaming(server.base_url))


@pytest.mark.parametrize("name", list(HOSTILE))
def test_each_hostile_request_is_answered_4xx(name: str, outcome) -> None:
    response = outcome[1][name]
    assert 400 <= response.status_code < 500, f"{response.status_code}: {response.text[:500]}"
    body = response.json()
    # vLLM answers in OpenAI's error shape, except for a body FastAPI cannot decode (its own {"detail": ...}).
    assert (body.get("error") or {}).get("message") or body.get("detail"), response.text[:500]


def test_streams_in_flight_finish_whole_and_unchanged(server: Served, outcome) -> None:
    texts, _ = outcome
    assert all(text for text in texts)
    for index, text in enumerate(texts):
        alone = httpx.post(f"{server.base_url}/v1/completions", json=stream_body(index), timeout=120)
        assert alone.json()["choices"][0]["text"] == text
        assert alone.json()["usage"]["completion_tokens"] == STREAM_TOKENS


def test_the_server_still_serves_afterwards(server: Served, outcome) -> None:
    response = httpx.post(f"{server.base_url}/v1/completions", json=completion("The capital of France is"), timeout=60)
    assert response.status_code == 200 and response.json()["choices"][0]["text"]
    assert server.status()["restarts"] == 0
