"""How many parameters and weight bytes each backend streams per decoded token."""

import math
from pathlib import Path

from vms_plugin.models.safetensors_header import read_header


def active_parameters(model_dir: Path) -> int:
    """The parameters a decoded token multiplies by: all of them, except that a mixture of experts uses only its
    top k of each layer's X experts (their tensors are named `.experts.` in the checkpoint)."""
    import json

    config = json.loads((model_dir / "config.json").read_text())
    experts = config.get("num_experts") or config.get("num_local_experts") or config.get("n_routed_experts")
    total = expert_parameters = 0
    for path in model_dir.glob("*.safetensors"):
        entries, _ = read_header(path)
        for name, entry in entries.items():
            size = math.prod(entry["shape"])
            total += size
            expert_parameters += size if ".experts." in name else 0
    if not experts:
        return total
    return total - expert_parameters + expert_parameters * config["num_experts_per_tok"] // experts


def gguf_weight_bytes(gguf_path: Path) -> int:
    """Quantized weights are read as stored; the file is nearly all weights."""
    return gguf_path.stat().st_size
