"""Multi-head latent attention (DeepSeek-V2/V3's MLA): parameters and the latent cache; the device computes.

Each token caches one row of L + R values instead of a key and a value per head: its KV compressed to the latent
(kv_a_proj_with_mqa's first L outputs, RMS-normalised) and one rotated key part shared by every head (the last R).
The per-head keys and values are kv_b_proj's products of the latent, which attention absorbs into the query and
the output (ops/interface.py, `latent_attention`), so they are never materialised. vLLM sizes the cache as MLA
(worker.py declares one head of L + R).
"""

from dataclasses import dataclass
from typing import Any

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import initializer

from vms_plugin.layers.linear import Linear
from vms_plugin.layers.norm import RMSNorm
from vms_plugin.layers.precision import storage_dtype
from vms_plugin.layers.rope_scaling import RopeParameters, attention_scale_factor
from vms_plugin.ops import layer_ops
from vms_plugin.ops.interface import LatentShape, LatentWeights

LATENT_CACHE = "latent_cache"  # parameter name of a layer's cache


@dataclass(frozen=True)
class LatentArgs:
    query_rank: int  # q_lora_rank; 0: q_proj alone
    latent: int  # kv_lora_rank
    nope: int  # qk_nope_head_dim
    rope: int  # qk_rope_head_dim
    value: int  # v_head_dim
    interleaved: bool  # rotary on pairs (x[2i], x[2i + 1]): DeepSeek-V2 always, V3 unless rope_interleave is false

    @classmethod
    def from_hf_config(cls, config: dict[str, Any]) -> "LatentArgs":
        if config.get("attention_bias"):
            raise ValueError("vms_plugin serves latent attention without biases; this config sets attention_bias")
        return cls(
            query_rank=config.get("q_lora_rank") or 0,
            latent=config["kv_lora_rank"],
            nope=config["qk_nope_head_dim"],
            rope=config["qk_rope_head_dim"],
            value=config["v_head_dim"],
            interleaved=config.get("rope_interleave") is not False,
        )

    @property
    def width(self) -> int:
        """Values cached per token: the latent and the shared rotated key."""
        return self.latent + self.rope


class FloatWeight(nn.Cell):
    """A checkpoint weight kept as the checkpoint shapes it, in float32: kv_b_proj, whose per-head blocks the
    device absorbs into the query and output rather than multiplying by it as a linear layer."""

    def __init__(self, out_features: int, in_features: int) -> None:
        super().__init__()
        self.weight = Parameter(initializer("zeros", (out_features, in_features), ms.float32), name="weight")


class LatentAttention(nn.Cell):
    """The layer's projections, norms and latent cache under the checkpoint's names."""

    def __init__(
        self,
        hidden_size: int,
        heads: int,
        args: LatentArgs,
        rope: RopeParameters,
        eps: float,
        layer_index: int,
        dtype: str,
        layer_dtype: str,
        int8_activations: bool,
    ) -> None:
        super().__init__()
        self.layer_index, self.args, self.eps, self.int8_activations = layer_index, args, eps, int8_activations
        query_width = heads * (args.nope + args.rope)
        if args.query_rank:
            self.q_a_proj = Linear(hidden_size, args.query_rank, dtype=layer_dtype)
            self.q_a_layernorm = RMSNorm(args.query_rank, eps)
            self.q_b_proj = Linear(args.query_rank, query_width, dtype=layer_dtype)
        else:
            self.q_proj = Linear(hidden_size, query_width, dtype=layer_dtype)
        self.kv_a_proj_with_mqa = Linear(hidden_size, args.width, dtype=layer_dtype)
        self.kv_a_layernorm = RMSNorm(args.latent, eps)
        self.kv_b_proj = FloatWeight(heads * (args.nope + args.value), args.latent)
        self.o_proj = Linear(heads * args.value, hidden_size, dtype=layer_dtype)
        self.shape = LatentShape(heads, args.nope, args.rope, args.latent, args.value, args.query_rank)
        self.scale = (args.nope + args.rope) ** -0.5 * attention_scale_factor(rope)
        self.latent_cache: Parameter | None = None
        self.cache_dtype = storage_dtype(dtype)
        self.prepared: dict = {}  # the device's values derived from the weights (LatentWeights.prepared)
        self._weights: LatentWeights | None = None
        self.ops = layer_ops()

    @property
    def latent_width(self) -> int:
        return self.args.width

    def allocate_kv_cache(self, num_blocks: int, block_size: int) -> None:
        """The latent cache for `num_blocks` of vLLM's blocks, in the layout the device's ops use."""
        shape = self.ops.latent_cache_shape(num_blocks * block_size, block_size, self.args.width)
        # Graph mode needs every parameter name to be unique across the model.
        self.latent_cache = Parameter(
            ops.zeros(shape, self.cache_dtype), name=f"{LATENT_CACHE}.{self.layer_index}", requires_grad=False
        )

    def copy_kv_slots(self, src: np.ndarray, dst: np.ndarray) -> None:
        self.ops.copy_latent_slots(self.latent_cache, Tensor(src.astype(np.int32)), Tensor(dst.astype(np.int32)))

    def weights(self) -> LatentWeights:
        """The same object until the cache is reallocated."""
        if self._weights is not None and self._weights.cache is self.latent_cache:
            return self._weights
        lowered = self.args.query_rank > 0
        self._weights = LatentWeights(
            q=(self.q_b_proj if lowered else self.q_proj).device_weight,
            q_a=self.q_a_proj.device_weight if lowered else None,
            q_a_norm=self.q_a_layernorm.weight if lowered else None,
            kv_a=self.kv_a_proj_with_mqa.device_weight,
            kv_a_norm=self.kv_a_layernorm.weight,
            kv_b=self.kv_b_proj.weight,
            o=self.o_proj.device_weight,
            cache=self.latent_cache,
            shape=self.shape,
            eps=self.eps,
            scale=self.scale,
            interleaved=self.args.interleaved,
            int8_activations=self.int8_activations,
            prepared=self.prepared,
        )
        return self._weights

    def construct(self, x: ms.Tensor, rotary: Any, inputs: Any) -> ms.Tensor:
        return self.ops.latent_attention(self.weights(), x, rotary, inputs)
