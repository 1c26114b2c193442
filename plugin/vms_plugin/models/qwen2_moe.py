"""Qwen2-MoE: Qwen2 (q/k/v biases) whose MLPs are routed experts beside a shared expert that every token runs,
its output scaled by sigmoid(shared_expert_gate(x)) (layers/experts.py)."""

from typing import ClassVar

from vms_plugin.layers.experts import ExpertArgs
from vms_plugin.models.qwen2 import Qwen2ForCausalLM
from vms_plugin.models.qwen3_moe import expert_sources


class Qwen2MoeForCausalLM(Qwen2ForCausalLM):
    checkpoint_sources: ClassVar[dict[str, tuple[str, ...]]] = {
        **Qwen2ForCausalLM.checkpoint_sources,
        **expert_sources("mlp", "gate_proj", "up_proj", "down_proj"),
        "mlp.shared_expert.gate_up_proj.device_weight": (
            "mlp.shared_expert.gate_proj.weight",
            "mlp.shared_expert.up_proj.weight",
        ),
    }
    experts_from_config = ExpertArgs.qwen
