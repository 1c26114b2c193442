"""Which MindSpore implementation serves a Hugging Face `architectures` entry, and building it from a directory."""

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mindspore import nn

from vms_plugin.models import llama
from vms_plugin.models.weights import load_weights


class UnsupportedModelError(ValueError):
    """The model directory is fine but its architecture is not implemented by the plugin."""


@dataclass(frozen=True)
class Architecture:
    args_from_config: Callable[[dict[str, Any]], Any]
    model_class: Callable[[Any], nn.Cell]
    stacked_params: Callable[[Any], Mapping[str, tuple[str, ...]]]


ARCHITECTURES: dict[str, Architecture] = {
    "LlamaForCausalLM": Architecture(llama.LlamaArgs.from_hf_config, llama.LlamaForCausalLM, llama.stacked_params),
}


def read_config(model_dir: Path) -> dict[str, Any]:
    config_path = model_dir / "config.json"
    try:
        return json.loads(config_path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"model directory {model_dir} has no config.json") from None
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read {config_path}: {error}") from None


def architecture_of(config: Mapping[str, Any]) -> Architecture:
    names = config.get("architectures") or []
    for name in names:
        if name in ARCHITECTURES:
            return ARCHITECTURES[name]
    raise UnsupportedModelError(
        f"model architecture {names or 'unknown'} is not implemented by vms_plugin; "
        f"supported: {', '.join(ARCHITECTURES)} (set VMS_DISABLE=1 to run it on vLLM's own CPU path)"
    )


def build_model(model_dir: Path) -> nn.Cell:
    """Construct the model for `model_dir` and load its weights."""
    config = read_config(model_dir)
    architecture = architecture_of(config)
    args = architecture.args_from_config(config)
    model = architecture.model_class(args)
    load_weights(model, model_dir, architecture.stacked_params(args))
    return model
