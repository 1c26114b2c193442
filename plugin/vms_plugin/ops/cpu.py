"""The CPU implementation: vms's fused C++ kernels (kernels/cpu_kernels.cc). KV caches are head-major,
[K, slots, D], so that one KV head's rows are contiguous for the attention kernel; any block size works."""

import mindspore as ms
from mindspore import Parameter, Tensor

from vms_plugin.attention.paged import AttentionInputs, attention_inputs
from vms_plugin.kernels import cpu as kernels


class CpuOps:
    name = "cpu"

    def __init__(self) -> None:
        self._scalars: dict[float, Tensor] = {}  # eps and scale as [1] tensors, made once

    def _scalar(self, value: float) -> Tensor:
        if value not in self._scalars:
            self._scalars[value] = Tensor([value], ms.float32)
        return self._scalars[value]

    def attention_inputs(self, batch) -> AttentionInputs:
        return attention_inputs(batch)

    def kv_cache_shape(self, num_slots: int, block_size: int, kv_heads: int, head_dim: int) -> tuple[int, ...]:
        return (kv_heads, num_slots, head_dim)

    def rms_norm(self, x, weight, eps):
        return kernels.rms_norm(x, weight, self._scalar(eps))

    def add_rms_norm(self, x, residual, weight, eps):
        return kernels.add_rms_norm(x, residual, weight, self._scalar(eps))

    def rope_and_cache(self, qkv, rotary, k_cache, v_cache, inputs: AttentionInputs, heads, qk_norm):
        norm = None if qk_norm is None else (qk_norm[0], qk_norm[1], self._scalar(qk_norm[2]))
        return kernels.rope_and_cache(qkv, *rotary, inputs.positions, inputs.slot_mapping, k_cache, v_cache, norm)

    def paged_attention(self, q, k_cache, v_cache, inputs: AttentionInputs, heads, scale):
        return kernels.paged_attention(
            q, k_cache, v_cache, inputs.positions, inputs.token_requests, inputs.context_slots, self._scalar(scale)
        )

    def silu_mul(self, gate_up):
        return kernels.silu_mul(gate_up)

    def copy_slots(self, k_cache: Parameter, v_cache: Parameter, src, dst) -> None:
        kernels.copy_slots(k_cache, v_cache, src, dst)
