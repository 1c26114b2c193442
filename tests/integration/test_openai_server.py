"""End to end: `vms serve` serves vLLM's OpenAI API with vms_plugin on a real port, as a user would run it."""

import asyncio
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jsonschema
import pytest
from sse import data_events, data_events_sync

from integration.served import Served, parse_metric, serving

pytestmark = pytest.mark.integration

SERVED_NAME = "smollm2-test"
QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def server(default_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    arguments = ("--model", str(default_model_dir), "--served-model-name", SERVED_NAME, "--max-model-len", "1024")
    # float32, not the default bfloat16: answers are compared token for token with transformers' float32 argmax
    # (test_first_requests.py serves the default dtype; test_model_precision.py measures bfloat16's accuracy).
    with serving(tmp_path_factory.mktemp("server"), {"VMS_DTYPE": "float32"}, *arguments) as served:
        yield served


def test_health_answers_200(server: Served) -> None:
    assert httpx.get(f"{server.base_url}/health", timeout=10).status_code == 200


def test_the_mindspore_platform_is_serving(server: Served) -> None:
    assert "vms_plugin: MindSpore" in server.log.read_text()


def test_models_lists_the_served_name(server: Served) -> None:
    models = httpx.get(f"{server.base_url}/v1/models", timeout=10).json()
    assert [model["id"] for model in models["data"]] == [SERVED_NAME]


def chat_request(stream: bool) -> dict:
    return {
        "model": SERVED_NAME,
        "messages": [{"role": "user", "content": QUESTION}],
        "temperature": 0,
        "max_tokens": 24,
        "stream": stream,
    }


def transformers_greedy_reply(model_dir: Path, max_tokens: int) -> str:
    """The same chat turn answered by transformers with an argmax loop, stopping at the end-of-turn token."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": QUESTION}], add_generation_prompt=True, tokenize=False
    )
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    generated: list[int] = []
    with torch.no_grad():
        for _ in range(max_tokens):
            next_id = int(model(ids).logits[0, -1].argmax())
            if next_id == tokenizer.eos_token_id:
                break
            generated.append(next_id)
            ids = torch.cat([ids, torch.tensor([[next_id]])], dim=1)
    return tokenizer.decode(generated)


def test_chat_completion_matches_transformers_greedy(server: Served, default_model_dir: Path) -> None:
    response = httpx.post(f"{server.base_url}/v1/chat/completions", json=chat_request(stream=False), timeout=120)
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == transformers_greedy_reply(default_model_dir, 24)
    assert "Paris" in choice["message"]["content"]


def test_streaming_chat_completion_sends_chunks_that_add_up(server: Served) -> None:
    whole = httpx.post(f"{server.base_url}/v1/chat/completions", json=chat_request(stream=False), timeout=120)
    pieces: list[str] = []
    with httpx.stream(
        "POST", f"{server.base_url}/v1/chat/completions", json=chat_request(stream=True), timeout=120
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = list(data_events_sync(response))
    assert events[-1] == "[DONE]"
    for event in events[:-1]:
        delta = json.loads(event)["choices"][0]["delta"]
        pieces.append(delta.get("content") or "")
    assert len([piece for piece in pieces if piece]) > 3
    assert "".join(pieces) == whole.json()["choices"][0]["message"]["content"]


CONCURRENT_STREAMS = 64
QUESTIONS = ["What is the capital of France?", "Name a primary color.", "What is 2 + 2?", "Say hello in Spanish."]


def crowd_request(index: int) -> dict:
    """Every fourth request is greedy; the others mix temperature, top-p, top-k, seeds and penalties."""
    body = {
        "model": SERVED_NAME,
        "messages": [{"role": "user", "content": QUESTIONS[index % len(QUESTIONS)]}],
        "max_tokens": 8 + index % 9,
        "stream": True,
    }
    if index % 4 == 0:
        return {**body, "temperature": 0}
    return {
        **body,
        "temperature": 0.5 + (index % 5) / 10,
        "top_p": 0.8 + (index % 3) / 20,
        "top_k": [0, 20, 50][index % 3],
        "seed": index,
        "presence_penalty": (index % 2) * 0.5,
    }


async def stream_one(client: httpx.AsyncClient, body: dict) -> tuple[str, str]:
    """The streamed text and the finish reason of one request."""
    text, finish = [], None
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200, await response.aread()
        async for data in data_events(response):
            if data == "[DONE]":
                continue
            choice = json.loads(data)["choices"][0]
            text.append(choice["delta"].get("content") or "")
            finish = choice.get("finish_reason") or finish
    return "".join(text), finish


async def stream_crowd(base_url: str, bodies: list[dict]) -> list[tuple[str, str]]:
    async with httpx.AsyncClient(base_url=base_url, timeout=600) as client:
        return await asyncio.gather(*(stream_one(client, body) for body in bodies))


def test_64_concurrent_streams_with_mixed_sampling_all_complete_correctly(server: Served) -> None:
    bodies = [crowd_request(index) for index in range(CONCURRENT_STREAMS)]
    results = asyncio.run(stream_crowd(server.base_url, bodies))
    assert all(finish in ("stop", "length") for _, finish in results)
    assert all(text for text, _ in results)
    # Greedy requests answered in a crowd of 64 equal the same request answered alone.
    for index in range(0, CONCURRENT_STREAMS, 4):
        alone = httpx.post(
            f"{server.base_url}/v1/chat/completions", json={**bodies[index], "stream": False}, timeout=120
        ).json()["choices"][0]["message"]["content"]
        assert results[index][0] == alone, f"request {index}"


CITY_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
    "required": ["city", "country"],
    "additionalProperties": False,
}


async def post_together(base_url: str, bodies: list[dict]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=base_url, timeout=120) as client:
        return await asyncio.gather(*(client.post("/v1/chat/completions", json=body) for body in bodies))


def test_response_format_json_schema_is_followed_beside_an_unconstrained_request(server: Served) -> None:
    constrained = {
        **chat_request(stream=False),
        "max_tokens": 64,
        "response_format": {"type": "json_schema", "json_schema": {"name": "place", "schema": CITY_SCHEMA}},
    }
    plain = chat_request(stream=False)
    alone = httpx.post(f"{server.base_url}/v1/chat/completions", json=plain, timeout=120).json()
    structured, beside = asyncio.run(post_together(server.base_url, [constrained, plain]))
    assert structured.status_code == 200, structured.text
    choice = structured.json()["choices"][0]
    assert choice["finish_reason"] == "stop", choice
    jsonschema.validate(json.loads(choice["message"]["content"]), CITY_SCHEMA)
    assert beside.json()["choices"][0]["message"] == alone["choices"][0]["message"]


def metric(base_url: str, name: str) -> float:
    return parse_metric(httpx.get(f"{base_url}/metrics", timeout=10).text, name)


async def read_then_disconnect(
    client: httpx.AsyncClient, body: dict, chunks: int, reached: asyncio.Queue, leave: asyncio.Event
) -> None:
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        received = 0
        async for _ in data_events(response):
            received += 1
            if received == chunks:
                await reached.put(None)
                await leave.wait()
                return  # leaving the block closes the connection mid-stream


async def start_and_abandon(base_url: str, body: dict, count: int) -> float:
    """Open `count` long streams; once each has streamed, note how many requests run, then disconnect them all."""
    reached: asyncio.Queue = asyncio.Queue()
    leave = asyncio.Event()
    async with httpx.AsyncClient(base_url=base_url, timeout=120) as client:
        readers = [asyncio.create_task(read_then_disconnect(client, body, 3, reached, leave)) for _ in range(count)]
        for _ in range(count):
            await reached.get()
        response = await client.get("/metrics")
        leave.set()
        await asyncio.gather(*readers)
    return parse_metric(response.text, "vllm:num_requests_running")


def test_disconnected_clients_free_their_requests_and_kv_blocks(server: Served) -> None:
    long_body = {**chat_request(stream=True), "max_tokens": 900, "ignore_eos": True}
    generated_before = metric(server.base_url, "vllm:generation_tokens_total")
    running_at_disconnect = asyncio.run(start_and_abandon(server.base_url, long_body, count=8))
    assert running_at_disconnect == 8
    deadline = time.monotonic() + 30
    while metric(server.base_url, "vllm:num_requests_running") or metric(server.base_url, "vllm:kv_cache_usage_perc"):
        assert time.monotonic() < deadline, "aborted requests still hold the engine 30 s after their clients left"
        time.sleep(0.5)
    generated = metric(server.base_url, "vllm:generation_tokens_total") - generated_before
    assert generated < 8 * 900 / 4, f"{generated} tokens generated: the abandoned requests ran on"


def test_sigterm_stops_the_server_cleanly(server: Served) -> None:
    tree = server.process_tree()  # supervisord, operator, watchdog, the engine and its children
    assert len(tree) >= 5, [process.name() for process in tree]
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=90) == 0, server.log_tail()
    time.sleep(1)
    assert [process.pid for process in tree if process.is_running() and process.status() != "zombie"] == []
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{server.base_url}/health", timeout=2)
