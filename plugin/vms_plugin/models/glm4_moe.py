"""GLM-4.5 (Glm4Moe): Llama attention with q/k/v biases (none on o), per-head q/k RMSNorm when `use_qk_norm`, RoPE
on the first `partial_rotary_factor` of each head's features; after `first_k_dense_replace` dense layers, routed
experts beside ungated shared experts, routed as DeepSeek-V3 routes (layers/experts.py: ExpertArgs.glm)."""

from typing import ClassVar

from vms_plugin.layers.experts import ExpertArgs
from vms_plugin.models.deepseek_v2 import SHARED_EXPERTS_SOURCES
from vms_plugin.models.llama import LlamaForCausalLM


class Glm4MoeForCausalLM(LlamaForCausalLM):
    checkpoint_sources: ClassVar[dict[str, tuple[str, ...]]] = {
        **LlamaForCausalLM.checkpoint_sources,
        **SHARED_EXPERTS_SOURCES,
    }
    architecture_flags: ClassVar[dict[str, bool]] = {"o_bias": False}
    experts_from_config = ExpertArgs.glm
