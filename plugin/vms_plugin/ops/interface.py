"""What a decoder layer asks of its device besides matmuls. Shapes: T tokens, H query heads, K KV heads, D head
size; the KV caches' layout belongs to the implementation (`kv_cache_shape`), and only it reads or writes them."""

from typing import Protocol

import mindspore as ms
from mindspore import Parameter

from vms_plugin.worker.batch import StepBatch


class StepInputs(Protocol):
    """A step's attention inputs, built once on the host by `LayerOps.attention_inputs` and shared by all layers."""

    positions: ms.Tensor  # [T] int32


class LayerOps(Protocol):
    name: str

    def attention_inputs(self, batch: StepBatch) -> StepInputs:
        """What this implementation's kernels need to know about the step, as tensors."""

    def kv_cache_shape(self, num_slots: int, block_size: int, kv_heads: int, head_dim: int) -> tuple[int, ...]:
        """Shape of one layer's K (and V) cache holding `num_slots` = num_blocks * block_size tokens."""

    def rms_norm(self, x: ms.Tensor, weight: Parameter, eps: float) -> ms.Tensor:
        """x [N, hidden] normalised and scaled."""

    def add_rms_norm(
        self, x: ms.Tensor, residual: ms.Tensor, weight: Parameter, eps: float
    ) -> tuple[ms.Tensor, ms.Tensor]:
        """(rms_norm(x + residual), x + residual)."""

    def rope_and_cache(
        self,
        qkv: ms.Tensor,
        rotary: tuple[ms.Tensor, ms.Tensor],
        k_cache: Parameter,
        v_cache: Parameter,
        inputs: StepInputs,
        heads: tuple[int, int, int],
        qk_norm: tuple[Parameter, Parameter, float] | None,
    ) -> ms.Tensor:
        """qkv [T, (H + 2K) * D] -> rotated queries; rotated keys and the values go into the caches.

        `heads` is (H, K, D); `rotary` the (cos, sin) tables [max_positions, D]; `qk_norm` (Qwen3) the per-head
        RMSNorm weights of q and k and their epsilon.
        """

    def paged_attention(
        self,
        q: ms.Tensor,
        k_cache: Parameter,
        v_cache: Parameter,
        inputs: StepInputs,
        heads: tuple[int, int, int],
        scale: float,
    ) -> ms.Tensor:
        """Causal attention of the step's queries over their requests' cached context -> [T, H * D]."""

    def silu_mul(self, gate_up: ms.Tensor) -> ms.Tensor:
        """gate_up [N, 2I] -> silu(gate) * up [N, I]."""

    def copy_slots(self, k_cache: Parameter, v_cache: Parameter, src: ms.Tensor, dst: ms.Tensor) -> None:
        """Copy token slots src[i] -> dst[i] of every KV head in both caches (vLLM's copy-on-write)."""
