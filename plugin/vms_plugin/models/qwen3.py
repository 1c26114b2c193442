"""Qwen3: Llama with an RMSNorm over each head of q and k before rotary (q_norm, k_norm)."""

from typing import ClassVar

from vms_plugin.models.llama import LlamaForCausalLM


class Qwen3ForCausalLM(LlamaForCausalLM):
    architecture_flags: ClassVar[dict[str, bool]] = {"qk_norm": True}
