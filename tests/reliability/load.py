"""Client load for the fault tests and the soak: concurrent clients on the OpenAI API, each sending one request
after another, and the fate of every request recorded: a complete answer, a clean error, or hung past the bound.

A complete answer is judged strictly: HTTP 200, the stream closed by `data: [DONE]`, and exactly the requested
number of completion tokens (requests ignore EOS), so an answer cut short by a dying engine is never counted whole.
"""

import asyncio
import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from sse import data_events

COMPLETE, ERROR, HUNG = "complete", "error", "hung"
PAUSE_AFTER_ERROR_S = 0.5  # a refused client waits a little, as a real one with retries would

PROMPTS = (
    "Once upon a time",
    "The capital of France is",
    "Write a short poem about the sea.",
    "List three colours:",
    "In computer science, a hash table is",
    "The weather today",
)


@dataclass(frozen=True)
class Request:
    kind: str  # "stream" (streaming completion) or "chat" (non-streaming chat completion)
    path: str
    body: dict
    tokens: int  # completion tokens a complete answer carries


@dataclass(frozen=True)
class Outcome:
    client: int
    kind: str
    started: float  # time.monotonic()
    ended: float
    result: str  # COMPLETE, ERROR or HUNG
    detail: str = ""  # what went wrong; empty when complete

    @property
    def seconds(self) -> float:
        return self.ended - self.started


def streaming_completion(model: str, prompt: str, tokens: int) -> Request:
    body = {
        "model": model,
        "prompt": prompt,
        "max_tokens": tokens,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    return Request("stream", "/v1/completions", body, tokens)


def chat_completion(model: str, question: str, tokens: int) -> Request:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": question}],
        "max_tokens": tokens,
        "ignore_eos": True,
        "temperature": 0.7,
    }
    return Request("chat", "/v1/chat/completions", body, tokens)


def streams_of(model: str, tokens: int) -> Callable[[random.Random], Request]:
    """Streaming completions of `tokens` tokens on varied prompts."""
    return lambda rng: streaming_completion(model, rng.choice(PROMPTS), tokens)


def mixed(model: str) -> Callable[[random.Random], Request]:
    """What a service sees: mostly streamed completions, some whole chat answers, short and long."""

    def request(rng: random.Random) -> Request:
        tokens = rng.choice((8, 32, 64, 128))
        if rng.random() < 0.7:
            return streaming_completion(model, rng.choice(PROMPTS), tokens)
        return chat_completion(model, rng.choice(PROMPTS), tokens)

    return request


async def send(client: httpx.AsyncClient, base_url: str, request: Request) -> str:
    """Empty when the answer came back complete, else what was wrong with it."""
    if not request.body.get("stream"):
        response = await client.post(base_url + request.path, json=request.body)
        if response.status_code != 200:
            return f"HTTP {response.status_code}: {response.text[:200]}"
        return _usage_problem(response.json().get("usage"), request.tokens)
    usage, done = None, False
    async with client.stream("POST", base_url + request.path, json=request.body) as response:
        if response.status_code != 200:
            return f"HTTP {response.status_code}: {(await response.aread())[:200]!r}"
        async for data in data_events(response):
            if data == "[DONE]":
                done = True
            else:
                chunk = json.loads(data)
                if "error" in chunk:
                    return f"error event: {chunk['error']}"
                usage = chunk.get("usage") or usage
    return _usage_problem(usage, request.tokens) if done else "the stream ended without [DONE]"


def _usage_problem(usage: dict | None, tokens: int) -> str:
    if not usage or usage.get("completion_tokens") != tokens:
        return f"incomplete answer: usage {usage}, {tokens} tokens asked"
    return ""


class Load(threading.Thread):
    """`clients` concurrent clients on an event loop of their own, until `finish()`; `outcomes` fills as requests
    end. A request not ended after `bound_s` is abandoned and recorded HUNG."""

    def __init__(
        self,
        base_url: str,
        requests: Callable[[random.Random], Request],
        clients: int,
        bound_s: float,
        seed: int = 0,
    ) -> None:
        super().__init__(name="load", daemon=True)
        self.base_url, self.requests, self.clients, self.bound_s, self.seed = base_url, requests, clients, bound_s, seed
        self.outcomes: list[Outcome] = []
        self.in_flight = 0  # requests sent and not yet ended (read from other threads, written by the loop's)
        self._finish = threading.Event()

    def finish(self) -> list[Outcome]:
        """Stop sending; every client ends its request in flight (within the bound); the outcomes."""
        self._finish.set()
        self.join(timeout=self.bound_s + 30)
        assert not self.is_alive(), "the load did not end within its bound"
        return self.outcomes

    def run(self) -> None:
        asyncio.run(self._clients())

    async def _clients(self) -> None:
        # httpx's own timeout lies beyond the bound, so that a hang is recorded as one rather than as a timeout.
        timeout = httpx.Timeout(self.bound_s + 30)
        limits = httpx.Limits(max_connections=self.clients, max_keepalive_connections=self.clients)
        async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
            await asyncio.gather(*(self._client(index, client) for index in range(self.clients)))

    async def _client(self, index: int, client: httpx.AsyncClient) -> None:
        rng = random.Random(self.seed * 1000 + index)
        while not self._finish.is_set():
            request, started = self.requests(rng), time.monotonic()
            self.in_flight += 1
            try:
                detail = await asyncio.wait_for(send(client, self.base_url, request), self.bound_s)
                result = ERROR if detail else COMPLETE
            except TimeoutError:
                result, detail = HUNG, f"no answer and no error within {self.bound_s:g} s"
            except (httpx.HTTPError, json.JSONDecodeError) as error:
                result, detail = ERROR, f"{type(error).__name__}: {error or repr(error.__context__)}"
            finally:
                self.in_flight -= 1
            self.outcomes.append(Outcome(index, request.kind, started, time.monotonic(), result, detail))
            if result != COMPLETE:
                await asyncio.sleep(PAUSE_AFTER_ERROR_S)
