"""Mixtral: Llama whose every MLP is routed experts (`num_local_experts`, top-k weights always normalised); the
checkpoint names them `block_sparse_moe`, its experts' gate, down and up projections w1, w2 and w3."""

from typing import ClassVar

from vms_plugin.layers.experts import ExpertArgs
from vms_plugin.models.llama import LlamaForCausalLM
from vms_plugin.models.qwen3_moe import expert_sources


class MixtralForCausalLM(LlamaForCausalLM):
    checkpoint_sources: ClassVar[dict[str, tuple[str, ...]]] = {
        **LlamaForCausalLM.checkpoint_sources,
        **expert_sources("block_sparse_moe", "w1", "w3", "w2"),
        "mlp.gate.device_weight": ("block_sparse_moe.gate.weight",),
    }
    experts_from_config = ExpertArgs.mixtral
