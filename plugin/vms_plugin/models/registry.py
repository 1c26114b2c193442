"""Which MindSpore implementation serves a Hugging Face `architectures` entry, and building it from a directory.

Architectures map to module paths and are imported only when built, so checking a config (as `vms serve` does
before it starts anything) does not import MindSpore.
"""

import importlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# architecture name in config.json -> "module:class"; the class has from_hf_config(), checkpoint_sources and
# checkpoint_parts().
ARCHITECTURES: dict[str, str] = {
    "LlamaForCausalLM": "vms_plugin.models.llama:LlamaForCausalLM",
    "Qwen2ForCausalLM": "vms_plugin.models.qwen2:Qwen2ForCausalLM",
    "Qwen3ForCausalLM": "vms_plugin.models.qwen3:Qwen3ForCausalLM",
    "Qwen2MoeForCausalLM": "vms_plugin.models.qwen2_moe:Qwen2MoeForCausalLM",
    "Qwen3MoeForCausalLM": "vms_plugin.models.qwen3_moe:Qwen3MoeForCausalLM",
    "MixtralForCausalLM": "vms_plugin.models.mixtral:MixtralForCausalLM",
    "DeepseekV2ForCausalLM": "vms_plugin.models.deepseek_v2:DeepseekV2ForCausalLM",
    "DeepseekV3ForCausalLM": "vms_plugin.models.deepseek_v2:DeepseekV3ForCausalLM",
    "Glm4MoeForCausalLM": "vms_plugin.models.glm4_moe:Glm4MoeForCausalLM",
}


class UnsupportedModelError(ValueError):
    """The model directory is fine but its architecture is not implemented by the plugin."""


def read_config(model_dir: Path) -> dict[str, Any]:
    config_path = model_dir / "config.json"
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model directory {model_dir} does not exist or is not a directory")
    try:
        return json.loads(config_path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"model directory {model_dir} has no config.json") from None
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read {config_path}: {error}") from None


def supported_architecture(config: Mapping[str, Any]) -> str:
    """The first of the config's architectures that the plugin implements."""
    names = config.get("architectures") or []
    for name in names:
        if name in ARCHITECTURES:
            return name
    raise UnsupportedModelError(
        f"model architecture {', '.join(names) or 'unknown'} is not implemented by vms_plugin; "
        f"supported: {', '.join(ARCHITECTURES)} (VMS_DISABLE=1 runs it on vLLM's own CPU path)"
    )


def build_model(model_dir: Path, dtype: str = "float32", int8=None, group=None, expert_parallel: bool = False):
    """Construct the MindSpore model for `model_dir` and load its weights, stored as `dtype` (layers/precision.py);
    with an `int8` scheme (layers/int8.py) the decoder layers' linear weights are int8. With a tensor-parallel
    `group` (layers/parallel.py) the model holds and loads this rank's part only, its experts split between the
    ranks with `expert_parallel`."""
    from mindspore.nn.utils import no_init_parameters

    from vms_plugin.models.weights import load_weights

    config = read_config(model_dir)
    module_name, class_name = ARCHITECTURES[supported_architecture(config)].split(":")
    model_class = getattr(importlib.import_module(module_name), class_name)
    with no_init_parameters():  # the parameters stay unallocated until the checkpoint fills them
        model = model_class.from_hf_config(config, dtype, int8, group, expert_parallel)
    load_weights(model, model_dir, model.checkpoint_sources, model.checkpoint_parts, model.checkpoint_experts)
    return model
