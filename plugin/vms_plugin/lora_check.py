"""An ASGI middleware for vLLM's OpenAI server (`--middleware vms_plugin.lora_check.AdapterCheck`, which `vms serve`
passes): /v1/load_lora_adapter answers an adapter that cannot load with 404 (no adapter at the path) or 400 (its
configuration refused: a rank above --max-lora-rank, ...) and the reason, before the engine is asked.

vLLM's own handler answers any refusal but a missing path with 500 Internal Server Error. The check is the one the
worker makes when it loads the adapter (models/lora_checkpoint.py), so the two cannot disagree.
"""

import json
from http import HTTPStatus
from pathlib import Path
from typing import Any

LOAD_PATH = "/v1/load_lora_adapter"


class AdapterCheck:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != LOAD_PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        problem = adapter_problem(body, _max_rank(scope))
        if problem is not None:
            await _send_error(send, *problem)
            return
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def adapter_problem(body: bytes, max_rank: int | None) -> tuple[HTTPStatus, str] | None:
    """(status, message) when the request's adapter cannot load; None to let vLLM's handler answer."""
    from vms_plugin.models.lora_checkpoint import AdapterNotFound, adapter_config

    try:
        path = json.loads(body)["lora_path"]
    except (ValueError, KeyError, TypeError):
        return None  # vLLM's own validation names what is missing
    if max_rank is None or not isinstance(path, str) or not path:
        return None
    try:
        adapter_config(Path(path), max_rank)
    except AdapterNotFound as error:
        return HTTPStatus.NOT_FOUND, str(error)
    except ValueError as error:
        return HTTPStatus.BAD_REQUEST, f"LoRA adapter at {path} refused: {error}"
    return None


def _max_rank(scope: dict) -> int | None:
    """--max-lora-rank of the engine behind the app; None without --enable-lora."""
    config = getattr(scope["app"].state, "vllm_config", None)
    lora = None if config is None else config.lora_config
    return None if lora is None else lora.max_lora_rank


async def _send_error(send: Any, status: HTTPStatus, message: str) -> None:
    """vLLM's ErrorResponse shape."""
    kind = "NotFoundError" if status == HTTPStatus.NOT_FOUND else "BadRequestError"
    body = json.dumps({"error": {"message": message, "type": kind, "param": "lora_path", "code": int(status)}})
    await send(
        {"type": "http.response.start", "status": int(status), "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": body.encode()})
