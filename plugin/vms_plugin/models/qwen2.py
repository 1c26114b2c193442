"""Qwen2 / Qwen2.5: Llama with biases on the q/k/v projections (not on o_proj)."""

from typing import Any

from vms_plugin.layers.int8 import Int8Scheme
from vms_plugin.models.llama import LlamaArgs, LlamaForCausalLM


class Qwen2ForCausalLM(LlamaForCausalLM):
    @classmethod
    def from_hf_config(
        cls, config: dict[str, Any], dtype: str = "float32", int8: Int8Scheme | None = None
    ) -> "Qwen2ForCausalLM":
        return cls(LlamaArgs.from_hf_config(config, dtype, int8, qkv_bias=True, o_bias=False))
