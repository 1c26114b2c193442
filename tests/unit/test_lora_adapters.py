"""PEFT adapter directories read and refused (models/lora_checkpoint.py), the worker's adapters and slots
(worker/lora.py), and the server's check of /v1/load_lora_adapter (lora_check.py), on adapters written here in
PEFT's format."""

import asyncio
import json
from http import HTTPStatus
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from safetensors.numpy import save_file

PREFIX = "base_model.model.model.layers"


def write_adapter(
    directory: Path, rank: int = 4, alpha: int = 8, extra: dict | None = None, layers: int = 2, **config
) -> Path:
    """A PEFT adapter of `layers` layers' q_proj and down_proj (hidden 16, intermediate 24) plus any `extra`
    tensors."""
    rng = np.random.default_rng(rank)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for layer in range(layers):
        for module, (out, inp) in {"self_attn.q_proj": (16, 16), "mlp.down_proj": (16, 24)}.items():
            tensors[f"{PREFIX}.{layer}.{module}.lora_A.weight"] = rng.standard_normal((rank, inp)).astype(np.float32)
            tensors[f"{PREFIX}.{layer}.{module}.lora_B.weight"] = rng.standard_normal((out, rank)).astype(np.float32)
    save_file({**tensors, **(extra or {})}, directory / "adapter_model.safetensors")
    settings = {"r": rank, "lora_alpha": alpha, "target_modules": ["q_proj", "down_proj"], "bias": "none", **config}
    (directory / "adapter_config.json").write_text(json.dumps(settings))
    return directory


def test_an_adapter_reads_per_layer_with_peft_scaling(tmp_path) -> None:
    from vms_plugin.models.lora_checkpoint import read_adapter

    plain = read_adapter(write_adapter(tmp_path / "plain"), max_rank=8)
    assert plain.rank == 4 and set(plain.layers) == {0, 1}
    assert set(plain.layers[1]) == {"q_proj", "down_proj"} and plain.layers[0]["q_proj"].scale == 2.0
    assert plain.layers[0]["down_proj"].a.shape == (4, 24) and plain.layers[0]["down_proj"].b.shape == (16, 4)
    stabilized = read_adapter(write_adapter(tmp_path / "rs", use_rslora=True), max_rank=8)
    assert stabilized.layers[0]["q_proj"].scale == 4.0  # alpha / sqrt(r)
    patterned = read_adapter(write_adapter(tmp_path / "pattern", alpha_pattern={"down_proj": 16}), max_rank=8)
    assert patterned.layers[0]["down_proj"].scale == 4.0 and patterned.layers[0]["q_proj"].scale == 2.0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rank": 16}, "LoRA rank 16 is greater than max_lora_rank 8"),
        ({"bias": "all"}, "Adapter bias is not supported"),
        ({"use_dora": True}, "does not yet support DoRA"),
        (
            {"extra": {"base_model.model.lm_head.lora_A.weight": np.zeros((4, 16), np.float32)}},
            r"LoRA of base_model.model.lm_head.lora_A.weight is not supported; vms serves adapters of the decoder",
        ),
    ],
    ids=["rank", "bias", "DoRA", "lm_head"],
)
def test_an_adapter_vms_cannot_serve_is_refused_by_name(tmp_path, change: dict, message: str) -> None:
    from vms_plugin.models.lora_checkpoint import read_adapter

    with pytest.raises(ValueError, match=message):
        read_adapter(write_adapter(tmp_path / "adapter", **change), max_rank=8)


def test_a_path_without_an_adapter_is_not_found(tmp_path) -> None:
    from vms_plugin.models.lora_checkpoint import AdapterNotFound, read_adapter

    with pytest.raises(AdapterNotFound, match=f"no LoRA adapter at {tmp_path}: adapter_config.json is missing"):
        read_adapter(tmp_path, max_rank=8)


def manager(layers: int = 2, max_loras: int = 2, max_cpu_loras: int = 3):
    """An AdapterManager over layers sized as write_adapter's adapters."""
    from vllm.config import LoRAConfig

    from vms_plugin.layers.lora import LayerAdapters, TargetShape
    from vms_plugin.worker.lora import AdapterManager

    shapes = {
        "qkv": TargetShape(16, (16, 8, 8), (None,) * 3),
        "o": TargetShape(16, (16,), (None,)),
        "gate_up": TargetShape(16, (24, 24), (None,) * 2),
        "down": TargetShape(24, (16,), (None,)),
    }
    config = LoRAConfig(max_lora_rank=8, max_loras=max_loras, max_cpu_loras=max_cpu_loras)
    return AdapterManager(config, [LayerAdapters(shapes, max_loras, 8) for _ in range(layers)])


def request(tmp_path: Path, adapter_id: int, layers: int = 2):
    from vllm.lora.request import LoRARequest

    path = write_adapter(tmp_path / f"adapter-{adapter_id}", layers=layers)
    return LoRARequest(f"adapter-{adapter_id}", adapter_id, str(path))


def test_adapters_load_once_take_free_slots_and_make_room_for_new_ones(tmp_path) -> None:
    adapters = manager()
    first, second, third = (request(tmp_path, i) for i in (1, 2, 3))
    assert adapters.add(first) is True and adapters.add(first) is False
    assert adapters.slots_for([first, second]) == {1: 0, 2: 1}
    assert np.any(adapters.layers[1].pairs["down"].a[1])  # the second adapter copied into slot 1
    assert adapters.slots_for([third, first]) == {3: 1, 1: 0}  # the second's slot, which this step does not use
    assert adapters.pin(1) and adapters.ids() == {1, 2, 3}
    adapters.add(request(tmp_path, 4))  # a fourth of three places: the least recently used unpinned goes (2)
    assert adapters.ids() == {1, 3, 4}
    assert adapters.remove(3) and not adapters.remove(3) and adapters.slots == [1, None]
    assert not np.any(adapters.layers[0].pairs["down"].a[1])  # its slot emptied
    with pytest.raises(ValueError, match="LoRA adapter 9 is not loaded"):
        adapters.pin(9)


def test_an_adapter_that_cannot_load_leaves_the_loaded_ones_alone(tmp_path) -> None:
    from vllm.exceptions import LoRAAdapterNotFoundError
    from vllm.lora.request import LoRARequest

    adapters = manager(layers=1)
    adapters.add(request(tmp_path, 1, layers=1))
    with pytest.raises(ValueError, match=r"the adapter has layers \[1\] but the model has 1 layers"):
        adapters.add(request(tmp_path, 2))  # written for two layers
    with pytest.raises(LoRAAdapterNotFoundError, match="No adapter found for /nowhere"):
        adapters.add(LoRARequest("missing", 3, "/nowhere"))
    assert adapters.ids() == {1}


def check(body: dict, max_rank: int | None = 8) -> tuple[int, dict | bytes]:
    """A request through AdapterCheck: (status, JSON answer) when it answered, (0, the body vLLM's app got)
    when it passed the request on."""
    from vms_plugin.lora_check import AdapterCheck

    sent, passed = [], []
    raw = json.dumps(body).encode()

    async def app(scope, receive, send) -> None:
        passed.append((await receive())["body"])

    async def receive() -> dict:
        return {"type": "http.request", "body": raw, "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    lora = None if max_rank is None else SimpleNamespace(max_lora_rank=max_rank)
    state = SimpleNamespace(vllm_config=SimpleNamespace(lora_config=lora))
    scope = {"type": "http", "path": "/v1/load_lora_adapter", "method": "POST", "app": SimpleNamespace(state=state)}
    asyncio.run(AdapterCheck(app)(scope, receive, send))
    if passed:
        return 0, passed[0]
    return sent[0]["status"], json.loads(sent[1]["body"])


def test_the_server_answers_an_adapter_that_cannot_load_with_a_4xx_and_passes_the_rest(tmp_path) -> None:
    good = write_adapter(tmp_path / "good")
    status, answer = check({"lora_name": "a", "lora_path": str(tmp_path / "none")})
    assert status == HTTPStatus.NOT_FOUND and str(tmp_path / "none") in answer["error"]["message"]
    status, answer = check({"lora_name": "a", "lora_path": str(write_adapter(tmp_path / "big", rank=16))})
    assert status == HTTPStatus.BAD_REQUEST
    assert "LoRA rank 16 is greater than max_lora_rank 8" in answer["error"]["message"]
    body = {"lora_name": "a", "lora_path": str(good)}
    assert check(body) == (0, json.dumps(body).encode())  # vLLM's handler gets the request as sent
    assert check({"lora_name": "a"})[0] == 0  # vLLM's own validation names the missing path
    assert check({"lora_name": "a", "lora_path": str(tmp_path / "none")}, max_rank=None)[0] == 0  # no --enable-lora
