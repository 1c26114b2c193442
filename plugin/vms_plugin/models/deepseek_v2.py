"""DeepSeek-V2 and V3 (which Kimi-K2 and others reuse): Llama's decoder layers with multi-head latent attention
(layers/latent_attention.py), the first `first_k_dense_replace` MLPs dense and the rest routed experts beside
ungated shared experts, routed by `topk_method` (layers/experts.py: softmax greedy or group-limited for V2, sigmoid
with the correction bias and groups for V3's noaux_tc)."""

from typing import ClassVar

from vms_plugin.layers.experts import ExpertArgs
from vms_plugin.layers.latent_attention import LatentArgs
from vms_plugin.models.llama import LlamaForCausalLM
from vms_plugin.models.qwen3_moe import expert_sources

# Routed experts beside ungated shared experts (`shared_experts`, one MLP) and the router's correction bias, as
# DeepSeek's checkpoints and those that copy them (GLM-4.5) name them; a dense layer's MLP as Llama's.
SHARED_EXPERTS_SOURCES: dict[str, tuple[str, ...]] = {
    "mlp.gate_up_proj.device_weight": ("mlp.gate_proj.weight", "mlp.up_proj.weight"),
    **expert_sources("mlp", "gate_proj", "up_proj", "down_proj"),
    "mlp.shared_expert.gate_up_proj.device_weight": (
        "mlp.shared_experts.gate_proj.weight",
        "mlp.shared_experts.up_proj.weight",
    ),
    "mlp.shared_expert.down_proj.device_weight": ("mlp.shared_experts.down_proj.weight",),
    "mlp.correction_bias": ("mlp.gate.e_score_correction_bias",),
}


class DeepseekV2ForCausalLM(LlamaForCausalLM):
    checkpoint_sources: ClassVar[dict[str, tuple[str, ...]]] = SHARED_EXPERTS_SOURCES
    experts_from_config = ExpertArgs.deepseek
    latent_from_config = LatentArgs.from_hf_config


class DeepseekV3ForCausalLM(DeepseekV2ForCausalLM):
    """The same parts; V3's config picks sigmoid routing with the correction bias (topk_method noaux_tc)."""
