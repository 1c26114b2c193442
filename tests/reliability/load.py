"""Client load for the fault tests and the soak: concurrent clients on the OpenAI API, each sending one request
after another, and the fate of every request recorded: a complete answer, a clean error, or hung past the bound.

A complete answer is judged strictly: HTTP 200, the stream closed by `data: [DONE]`, and exactly the requested
number of completion tokens (requests ignore EOS), so an answer cut short by a dying engine is never counted whole.
A structured answer must end by its grammar and parse as its JSON schema; a client that leaves a stream on purpose
must have received the events it waited for.
"""

import asyncio
import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import jsonschema
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


PLACE_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "enum": ["Paris", "Rome", "Madrid", "Berlin"]},
        "sunny": {"type": "boolean"},
    },
    "required": ["city", "sunny"],
    "additionalProperties": False,
}
EVENTS_BEFORE_LEAVING = 4  # a leaving client reads this many events of a 128-token stream, then disconnects


@dataclass(frozen=True)
class Request:
    kind: str  # what `mixed` calls it: "stream", "completion", "chat", "chat-stream", "structured" or "left"
    path: str
    body: dict
    tokens: int  # completion tokens a complete answer carries; 0 when the grammar or the client ends it
    schema: dict | None = None  # the JSON schema a structured answer must follow
    leave_after: int = 0  # events to read before disconnecting; 0 reads the whole answer


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


STREAMED = {"stream": True, "stream_options": {"include_usage": True}}


def streaming_completion(model: str, prompt: str, tokens: int) -> Request:
    body = {"model": model, "prompt": prompt, "max_tokens": tokens, "ignore_eos": True, **STREAMED}
    return Request("stream", "/v1/completions", body, tokens)


def completion(model: str, prompt: str, tokens: int) -> Request:
    body = {"model": model, "prompt": prompt, "max_tokens": tokens, "ignore_eos": True, "temperature": 0.7}
    return Request("completion", "/v1/completions", body, tokens)


def chat_completion(model: str, question: str, tokens: int) -> Request:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": question}],
        "max_tokens": tokens,
        "ignore_eos": True,
        "temperature": 0.7,
    }
    return Request("chat", "/v1/chat/completions", body, tokens)


def streaming_chat(model: str, question: str, tokens: int) -> Request:
    request = chat_completion(model, question, tokens)
    return Request("chat-stream", request.path, {**request.body, **STREAMED}, tokens)


def structured_chat(model: str) -> Request:
    """A chat answer held to PLACE_SCHEMA by the grammar, which also ends it (EOS is not ignored)."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "Pick a European capital and say whether it is sunny, as JSON."}],
        "max_tokens": 64,
        "temperature": 0.7,
        "response_format": {"type": "json_schema", "json_schema": {"name": "place", "schema": PLACE_SCHEMA}},
    }
    return Request("structured", "/v1/chat/completions", body, 0, schema=PLACE_SCHEMA)


def leaving_chat(model: str, question: str) -> Request:
    """A streamed chat answer whose client disconnects after a few events, as a closed browser tab does."""
    request = streaming_chat(model, question, 128)
    return Request("left", request.path, request.body, 0, leave_after=EVENTS_BEFORE_LEAVING)


def streams_of(model: str, tokens: int) -> Callable[[random.Random], Request]:
    """Streaming completions of `tokens` tokens on varied prompts."""
    return lambda rng: streaming_completion(model, rng.choice(PROMPTS), tokens)


MIX_TEXT = (
    "35% streamed completions, 15% whole completions, 15% whole chat, 15% streamed chat, 10% chat held to a JSON "
    "schema, 10% streamed chat left by its client after 4 events"
)
MIX = (  # (share of the requests, how one is made from the model, a prompt and a length): as MIX_TEXT says
    (0.35, streaming_completion),
    (0.15, completion),
    (0.15, chat_completion),
    (0.15, streaming_chat),
    (0.10, lambda model, prompt, tokens: structured_chat(model)),
    (0.10, lambda model, prompt, tokens: leaving_chat(model, prompt)),
)


def mixed(model: str) -> Callable[[random.Random], Request]:
    """What a service sees: streamed and whole completions and chat answers, short and long, some held to a JSON
    schema, some left by their client midway."""
    shares, makers = zip(*MIX, strict=True)

    def request(rng: random.Random) -> Request:
        make = rng.choices(makers, weights=shares)[0]
        return make(model, rng.choice(PROMPTS), rng.choice((8, 32, 64, 128)))

    return request


async def send(client: httpx.AsyncClient, base_url: str, request: Request) -> str:
    """Empty when the answer came back complete, else what was wrong with it."""
    if not request.body.get("stream"):
        response = await client.post(base_url + request.path, json=request.body)
        if response.status_code != 200:
            return f"HTTP {response.status_code}: {response.text[:200]}"
        if request.schema:
            return _structure_problem(response.json()["choices"][0], request.schema)
        return _usage_problem(response.json().get("usage"), request.tokens)
    usage, done, events = None, False, 0
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
                events += 1
                if events == request.leave_after:
                    return ""  # leaving the block closes the connection midway, as the client meant to
    if request.leave_after:
        return f"the stream ended after {events} events, before the client meant to leave"
    return _usage_problem(usage, request.tokens) if done else "the stream ended without [DONE]"


def _structure_problem(choice: dict, schema: dict) -> str:
    if choice["finish_reason"] != "stop":
        return f"a structured answer not ended by its grammar: finish_reason {choice['finish_reason']}"
    try:
        jsonschema.validate(json.loads(choice["message"]["content"]), schema)
    except (json.JSONDecodeError, jsonschema.ValidationError) as error:
        return f"a structured answer off its schema: {type(error).__name__}: {str(error)[:200]}"
    return ""


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
