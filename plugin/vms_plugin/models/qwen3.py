"""Qwen3: Llama with an RMSNorm over each head of q and k before rotary (q_norm, k_norm)."""

from typing import Any

from vms_plugin.layers.int8 import Int8Scheme
from vms_plugin.models.llama import LlamaArgs, LlamaForCausalLM


class Qwen3ForCausalLM(LlamaForCausalLM):
    @classmethod
    def from_hf_config(
        cls, config: dict[str, Any], dtype: str = "float32", int8: Int8Scheme | None = None
    ) -> "Qwen3ForCausalLM":
        return cls(LlamaArgs.from_hf_config(config, dtype, int8, qk_norm=True))
