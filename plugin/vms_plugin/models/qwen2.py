"""Qwen2 / Qwen2.5: Llama with biases on the q/k/v projections (not on o_proj)."""

from typing import ClassVar

from vms_plugin.models.llama import LlamaForCausalLM


class Qwen2ForCausalLM(LlamaForCausalLM):
    architecture_flags: ClassVar[dict[str, bool]] = {"qkv_bias": True, "o_bias": False}
