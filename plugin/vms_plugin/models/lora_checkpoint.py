"""Read a PEFT LoRA adapter directory (adapter_config.json, adapter_model.safetensors) into per-layer projections.

The configuration is read and checked by vLLM's own PEFTHelper (rank against --max-lora-rank, bias, DoRA's
absence...), so an adapter vms refuses is one vLLM refuses, with vLLM's words. On top: only the decoder layers'
q/k/v/o and gate/up/down projections are served (layers/lora.py); an adapter of the embedding, the output
projection or with `modules_to_save` is refused by name.
"""

import json
import re
from dataclasses import dataclass
from pathlib import Path

from vms_plugin.layers.lora import PROJECTIONS, ProjectionAdapter
from vms_plugin.models.safetensors_header import CheckpointError
from vms_plugin.models.weights import SafetensorsFile

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight -> (3, "q_proj", "A")
_PROJECTION_KEY = re.compile(r"(?:^|\.)layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)\.lora_([AB])\.weight$")


class AdapterNotFound(FileNotFoundError):
    """The path holds no PEFT adapter."""


@dataclass(frozen=True)
class AdapterCheckpoint:
    rank: int  # the largest rank of any projection
    layers: dict[int, dict[str, ProjectionAdapter]]  # decoder layer -> PEFT module name -> its adapter


def adapter_config(path: Path, max_rank: int):
    """vLLM's PEFTHelper of the adapter at `path`, checked against `max_rank` (ValueError naming the problem)."""
    from vllm.lora.peft_helper import PEFTHelper

    config_path = path / ADAPTER_CONFIG
    if not config_path.is_file():
        raise AdapterNotFound(f"no LoRA adapter at {path}: {ADAPTER_CONFIG} is missing (a PEFT adapter directory)")
    try:
        helper = PEFTHelper.from_dict(json.loads(config_path.read_text()))
    except (json.JSONDecodeError, ValueError, TypeError) as error:
        raise ValueError(f"{config_path} is not a PEFT LoRA configuration: {error}") from None
    helper.validate_legal(_RankLimit(max_rank))
    return helper


def read_adapter(path: Path, max_rank: int) -> AdapterCheckpoint:
    """The adapter's projections, float32, their B not yet scaled (each carries its scale)."""
    helper = adapter_config(path, max_rank)
    weights_path = path / ADAPTER_WEIGHTS
    if not weights_path.is_file():
        raise AdapterNotFound(f"no LoRA adapter at {path}: {ADAPTER_WEIGHTS} is missing")
    try:
        checkpoint = SafetensorsFile(weights_path)
    except CheckpointError as error:
        raise ValueError(str(error)) from None
    halves: dict[tuple[int, str], dict[str, object]] = {}
    unsupported = []
    for key in checkpoint.entries:
        match = _PROJECTION_KEY.search(key)
        if match is None or match.group(2) not in PROJECTIONS:
            unsupported.append(key)
            continue
        layer, module, half = int(match.group(1)), match.group(2), match.group(3)
        halves.setdefault((layer, module), {})[half] = (key, checkpoint.read_float32(key).copy())
    if unsupported:
        raise ValueError(
            f"{path}: LoRA of {', '.join(sorted(unsupported)[:3])}{' ...' if len(unsupported) > 3 else ''} is not "
            f"supported; vms serves adapters of the decoder layers' {', '.join(sorted(PROJECTIONS))}"
        )
    layers: dict[int, dict[str, ProjectionAdapter]] = {}
    for (layer, module), pair in sorted(halves.items()):
        if set(pair) != {"A", "B"}:
            raise ValueError(f"{path}: layer {layer} {module} has lora_{next(iter(pair))} without its other half")
        (a_key, a), (_, b) = pair["A"], pair["B"]
        _, scale = helper.get_rank_and_scaling(a_key.removeprefix("base_model.model.").removesuffix(".lora_A.weight"))
        layers.setdefault(layer, {})[module] = ProjectionAdapter(a, b, scale)
    ranks = [adapter.a.shape[0] for projections in layers.values() for adapter in projections.values()]
    return AdapterCheckpoint(max(ranks, default=0), layers)


@dataclass(frozen=True)
class _RankLimit:
    """What PEFTHelper.validate_legal reads of vLLM's LoRAConfig."""

    max_lora_rank: int
