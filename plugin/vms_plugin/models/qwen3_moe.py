"""Qwen3-MoE: Qwen3 (q/k norms) whose MLPs are routed experts (softmax top-k, `norm_topk_prob`), except the layers
`mlp_only_layers` names or `decoder_sparse_step` skips, which keep a dense MLP (layers/experts.py)."""

from typing import ClassVar

from vms_plugin.layers.experts import EXPERT, EXPERT_WEIGHTS, ExpertArgs
from vms_plugin.models.llama import LlamaForCausalLM


def expert_sources(prefix: str, gate: str, up: str, down: str) -> dict[str, tuple[str, ...]]:
    """checkpoint_sources entries of a layer's stacked experts whose checkpoint names are
    `{prefix}.experts.{expert}.{gate|up|down}.weight`."""
    expert = f"{prefix}.experts.{EXPERT}"
    return {
        f"mlp.gate_up_proj.{EXPERT_WEIGHTS}": (f"{expert}.{gate}.weight", f"{expert}.{up}.weight"),
        f"mlp.down_proj.{EXPERT_WEIGHTS}": (f"{expert}.{down}.weight",),
    }


class Qwen3MoeForCausalLM(LlamaForCausalLM):
    checkpoint_sources: ClassVar[dict[str, tuple[str, ...]]] = {
        **LlamaForCausalLM.checkpoint_sources,
        **expert_sources("mlp", "gate_proj", "up_proj", "down_proj"),
    }
    architecture_flags: ClassVar[dict[str, bool]] = {"qk_norm": True}
    experts_from_config = ExpertArgs.qwen
