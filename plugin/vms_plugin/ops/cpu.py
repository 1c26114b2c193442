"""The CPU implementation: vms's C++ kernels (kernels/cpu_kernels.cc), a whole decoder layer per launch.

KV caches are head-major, [K, slots, D], so that one KV head's rows are contiguous for attention; any block size
works. Linear weights are packed in 64-column panels (kernels/pack.py) so that decode streams them in order.
Both are stored as float32, float16 or bfloat16, and linear weights also as int8 with per-channel scales; the
kernels read the type from each tensor.
"""

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, ops

from vms_plugin.attention.paged import AttentionInputs, attention_inputs
from vms_plugin.kernels import cpu as kernels
from vms_plugin.kernels.pack import pack_int8_linear_weight, pack_linear_weight, packed_shape
from vms_plugin.ops.interface import DecoderWeights


class CpuOps:
    name = "cpu"

    def __init__(self) -> None:
        self._constants: dict[tuple, Tensor] = {}  # scalars, zero biases and layer configs, made once

    def _constant(self, values: tuple[float, ...]) -> Tensor:
        if values not in self._constants:
            self._constants[values] = Tensor(np.array(values, dtype=np.float32))
        return self._constants[values]

    def _zeros(self, size: int) -> Tensor:
        """A stand-in for an absent bias or norm weight (the kernels take every input)."""
        key = ("zeros", size)
        if key not in self._constants:
            self._constants[key] = ops.zeros((size,), ms.float32)
        return self._constants[key]

    def attention_inputs(self, batch) -> AttentionInputs:
        return attention_inputs(batch)

    def kv_cache_shape(self, num_slots: int, block_size: int, kv_heads: int, head_dim: int) -> tuple[int, ...]:
        return (kv_heads, num_slots, head_dim)

    def linear_weight_shape(self, in_features: int, out_features: int, dtype: str) -> tuple[int, ...]:
        return packed_shape(in_features, out_features, dtype)

    def linear_weight(self, weight: np.ndarray, dtype: str, scales: np.ndarray | None = None) -> Tensor:
        if dtype == "int8":
            return Tensor(pack_int8_linear_weight(weight, scales))
        packed = Tensor(pack_linear_weight(weight, dtype))
        # bfloat16 arrives as its bit patterns. A dtype view would be made contiguous (copied) at every launch: the
        # copy makes it a tensor of its own.
        return packed.view(ms.bfloat16).copy() if dtype == "bfloat16" else packed

    def linear(self, x, weight, bias, out_features):
        float_activations = self._constant((0.0,))
        return kernels.linear(x, weight, self._zeros(out_features) if bias is None else bias, float_activations)

    def embedding(self, ids, weight, width):
        return kernels.packed_rows(ids, weight, self._zeros(width))

    def rms_norm(self, x, weight, eps):
        return kernels.rms_norm(x, weight, self._constant((eps,)))

    def add_rms_norm(self, x, residual, weight, eps):
        return kernels.add_rms_norm(x, residual, weight, self._constant((eps,)))

    def decoder_layer(self, weights: DecoderWeights, x, residual, rotary, inputs: AttentionInputs):
        heads, kv_heads, head_dim = weights.heads
        qk_norm = weights.q_norm is not None
        config = (
            weights.eps,
            float(residual is not None),
            weights.eps if qk_norm else 0.0,
            weights.scale,
            float(weights.intermediate_size),
            float(weights.int8_activations),
        )
        return kernels.decoder_layer(
            x,
            x if residual is None else residual,
            weights.input_norm,
            weights.qkv,
            self._zeros((heads + 2 * kv_heads) * head_dim) if weights.qkv_bias is None else weights.qkv_bias,
            weights.q_norm if qk_norm else self._zeros(head_dim),
            weights.k_norm if qk_norm else self._zeros(head_dim),
            weights.o,
            self._zeros(x.shape[1]) if weights.o_bias is None else weights.o_bias,
            weights.post_norm,
            weights.gate_up,
            weights.down,
            *rotary,
            inputs.positions,
            inputs.slot_mapping,
            inputs.token_requests,
            inputs.context_slots,
            weights.k_cache,
            weights.v_cache,
            self._constant(config),
        )

    def copy_slots(self, k_cache: Parameter, v_cache: Parameter, src, dst) -> None:
        kernels.copy_slots(k_cache, v_cache, src, dst)
