"""What a model asks of its device. Shapes: T tokens, E hidden size, H query heads, K KV heads, D head size.

Two layouts belong to the implementation and only it reads or writes them: the KV caches' (`kv_cache_shape`)
and the linear layers' weights (`linear_weight_shape`, filled from the checkpoint through `linear_weight`), which
an embedding table shares (`embedding` looks rows up in it). Both are kept in the model's storage type
(layers/precision.py: "float32", "float16" or "bfloat16"), and a quantized model's decoder linear weights as
"int8" with per-channel scales (layers/int8.py); activations are float32.
"""

from typing import Any, NamedTuple, Protocol

import mindspore as ms
import numpy as np
from mindspore import Parameter

from vms_plugin.worker.batch import StepBatch


class StepInputs(Protocol):
    """A step's attention inputs, built once on the host by `LayerOps.attention_inputs` and shared by all layers;
    only the implementation that made them reads them."""


class DecoderWeights(NamedTuple):
    """One decoder layer's parameters and KV caches; linear weights in the implementation's layout."""

    input_norm: Parameter  # [E]
    qkv: Parameter  # q, k and v projections stacked: (H + 2K) * D outputs
    qkv_bias: Parameter | None  # Qwen2
    q_norm: Parameter | None  # [D], Qwen3: RMSNorm over each head of q and k before rotary
    k_norm: Parameter | None
    o: Parameter
    o_bias: Parameter | None
    post_norm: Parameter  # [E]
    gate_up: Parameter | None  # gate and up projections stacked: 2I outputs; None when the MLP is routed experts
    down: Parameter | None  # (ExpertWeights), which only `decoder_attention` then serves
    k_cache: Parameter
    v_cache: Parameter
    heads: tuple[int, int, int]  # (H, K, D)
    intermediate_size: int  # I
    eps: float  # every RMSNorm's epsilon
    scale: float  # attention scale
    int8_activations: bool  # int8 linear weights: quantize each one's input per token (W8A8)
    # What the implementation derives from these weights on the layer's first step and keeps (the layer owns it):
    # weights do not change once loaded.
    prepared: dict[Any, Any]
    # LoRA slots (layers/lora.py) when adapters are enabled: a token adds its request's slot's products (StepBatch's
    # adapter_slots) to qkv's, o's, gate_up's and down's outputs. Filled at run time, in place.
    adapters: Any = None


class Routing(NamedTuple):
    """How a router's logits [X] choose a token's experts and weigh them."""

    top_k: int  # experts per token
    normalize: bool  # the top k's weights divided by their sum (Qwen's norm_topk_prob, Mixtral, DeepSeek-V3)
    sigmoid: bool = False  # scores by sigmoid (DeepSeek-V3's scoring_func), else by softmax
    # Group-limited routing (DeepSeek): the experts in `groups` equal groups, the choice only among the experts of
    # the `top_groups` groups worth most, a group's worth its best score or (`group_by_top_two`) its two best summed.
    groups: int = 1
    top_groups: int = 1
    group_by_top_two: bool = False
    scaling: float = 1.0  # the weights' factor (DeepSeek's routed_scaling_factor)


class ExpertWeights(NamedTuple):
    """A mixture-of-experts MLP: a router over X experts, each a SwiGLU MLP of I features; every expert's linear
    weight is the implementation's layout of one [out, in] weight, the X of them stacked on a new first axis."""

    router: Parameter  # the router's linear weight: X outputs
    # The experts this rank holds, X' of them from `first_expert` on (all X on one rank; a share of them under
    # expert parallelism, whose ranks' results the caller sums); their I may be a tensor-parallel rank's share.
    gate_up: Parameter  # [X', ...]: each expert's gate and up projections stacked, 2I outputs
    down: Parameter  # [X', ...]: each expert's down projection, I inputs
    num_experts: int  # X
    first_expert: int
    routing: Routing
    # [X] float32 added to the scores for choosing only (DeepSeek-V3's noaux_tc e_score_correction_bias), or None
    correction_bias: Parameter | None
    intermediate_size: int  # I
    int8_activations: bool  # int8 expert weights: quantize each one's input per token (W8A8)
    # A shared expert every token runs besides its routed ones (Qwen2-MoE), a SwiGLU MLP of its own size, its
    # output scaled by sigmoid(shared_gate(x)) when the model has that gate; None when the model has none.
    shared_gate_up: Parameter | None
    shared_down: Parameter | None
    shared_gate: Parameter | None  # a linear weight of one output
    shared_intermediate_size: int
    prepared: dict[Any, Any]  # as DecoderWeights.prepared


class LatentShape(NamedTuple):
    """The sizes of a multi-head latent attention layer (DeepSeek's MLA)."""

    heads: int  # H, this rank's
    nope: int  # Dn: each head's query/key features without position (qk_nope_head_dim)
    rope: int  # R: the rotated features, one key part shared by every head (qk_rope_head_dim)
    latent: int  # L: the compressed KV every token caches (kv_lora_rank)
    value: int  # Dv: each head's value features (v_head_dim)
    query_rank: int  # the query's low rank (q_lora_rank); 0: the query is one projection


class LatentWeights(NamedTuple):
    """One multi-head latent attention layer: each token caches one row [L + R] (its compressed KV normalised, then
    its rotated key part), which every head reads; linear weights in the implementation's layout."""

    q: Parameter  # q_proj, or with a query rank q_b_proj: H * (Dn + R) outputs
    q_a: Parameter | None  # q_a_proj: `query_rank` outputs; None without a query rank
    q_a_norm: Parameter | None  # [query_rank]
    kv_a: Parameter  # kv_a_proj_with_mqa: L + R outputs
    kv_a_norm: Parameter  # [L]
    kv_b: Parameter  # kv_b_proj [H * (Dn + Dv), L] float32 as the checkpoint holds it: each head's key and value
    o: Parameter  # o_proj: H * Dv inputs
    cache: Parameter  # the latent cache, `LayerOps.latent_cache_shape`
    shape: LatentShape
    eps: float  # the q_a and kv_a norms' epsilon
    scale: float  # attention scale
    interleaved: bool  # the rotated features are pairs (x[2i], x[2i + 1]) (DeepSeek), else halves (rotate-half)
    int8_activations: bool
    prepared: dict[Any, Any]  # as DecoderWeights.prepared

    def absorbed_projections(self) -> tuple[np.ndarray, np.ndarray]:
        """(W_UK [H, Dn, L], W_UV [H, Dv, L]) float32: kv_b's rows of each head's keys and values."""
        s = self.shape
        kv_b = self.kv_b.asnumpy().astype(np.float32).reshape(s.heads, s.nope + s.value, s.latent)
        return np.ascontiguousarray(kv_b[:, : s.nope]), np.ascontiguousarray(kv_b[:, s.nope :])


class DecoderStack(NamedTuple):
    """A rank's decoder layers in order. The model makes it again whenever a layer's DecoderWeights are made again
    (its KV caches reallocated), so what the implementation derives from it may name the caches."""

    layers: tuple[DecoderWeights, ...]
    prepared: dict[Any, Any]  # as DecoderWeights.prepared, for the whole stack


class ModelEnds(NamedTuple):
    """What surrounds the decoder layers of a model that one rank holds whole: the embedding table before them, the
    final norm and the output projection after; tables in the linear weights' layout."""

    embedding: Parameter  # [V, E]
    final_norm: Parameter  # [E]
    eps: float
    head: Parameter  # the output projection [V, E]; the embedding itself when the model ties them
    vocab: int  # V
    int8_activations: bool  # an int8 output projection quantizes its input per token (W8A8)


class LayerOps(Protocol):
    name: str

    def attention_inputs(self, batch: StepBatch) -> StepInputs:
        """What this implementation's kernels need to know about the step, as tensors."""

    def kv_cache_shape(self, num_slots: int, block_size: int, kv_heads: int, head_dim: int) -> tuple[int, ...]:
        """Shape of one layer's K (and V) cache holding `num_slots` = num_blocks * block_size tokens."""

    def latent_cache_shape(self, num_slots: int, block_size: int, width: int) -> tuple[int, ...]:
        """Shape of one latent attention layer's cache holding `num_slots` rows of `width` (L + R)."""

    def linear_weight_shape(self, in_features: int, out_features: int, dtype: str) -> tuple[int, ...]:
        """Shape of a linear layer's weight parameter stored as `dtype`."""

    def linear_weight(self, weight: np.ndarray, dtype: str, scales: np.ndarray | None = None) -> ms.Tensor:
        """A checkpoint's weight [out, in] in this implementation's layout, stored as `dtype`: float32 values, or
        for "int8" the quantized values q (int8) with their per-output-channel `scales` [out] (layers/int8.py)."""

    def linear(
        self, x: ms.Tensor, weight: Parameter, bias: Parameter | None, out_features: int, int8_activations: bool = False
    ) -> ms.Tensor:
        """x [N, in] -> x @ W^T + bias, [N, out]; an int8 weight with `int8_activations` quantizes x per token
        (W8A8)."""

    def embedding(self, ids: ms.Tensor, weight: Parameter, width: int) -> ms.Tensor:
        """Rows W[ids] [T, width] (float32) of a table W [vocab, width] held as a linear weight, so that a tied
        output projection and the embedding are one parameter. Ids outside [0, vocab) give rows of zeros (another
        tensor-parallel rank's tokens)."""

    def rms_norm(self, x: ms.Tensor, weight: Parameter, eps: float) -> ms.Tensor:
        """x [N, E] normalised and scaled."""

    def add_rms_norm(
        self, x: ms.Tensor, residual: ms.Tensor, weight: Parameter, eps: float
    ) -> tuple[ms.Tensor, ms.Tensor]:
        """(rms_norm(x + residual), x + residual)."""

    def rotary(self, cos: np.ndarray, sin: np.ndarray) -> Any:
        """The rotary tables cos and sin [max_positions, D] (float32) as this implementation's decoder layers read
        them; made once per model."""

    def causal_lm(
        self,
        stack: DecoderStack,
        ends: ModelEnds,
        ids: ms.Tensor,
        rotary: Any,
        inputs: StepInputs,
        logits_index: ms.Tensor | None,
    ) -> ms.Tensor:
        """A model that one rank holds whole: token ids [T] -> logits [S, V] of the tokens at `logits_index` (every
        token, in order, when None).

        The embedding's rows, then the pre-norm decoder layers in turn. Per layer: (residual add +) RMSNorm, qkv
        projection, rotary (after the per-head q/k norm if any) with k and v written to the caches at the step's
        slots, causal attention over each request's cached context, o projection, residual add + RMSNorm,
        SiLU(gate) * up, down projection; each layer's (output, residual stream) feed the next. Then the final
        residual add + RMSNorm and the output projection. `rotary` is what `rotary` made of the tables.
        """

    def decoder_attention(
        self,
        weights: DecoderWeights,
        x: ms.Tensor,
        residual: ms.Tensor | None,
        rotary: Any,
        inputs: StepInputs,
    ) -> tuple[ms.Tensor, ms.Tensor]:
        """One layer of `causal_lm` up to the o projection -> (o projection's output, residual stream; x is the
        stream when `residual` is None): with the weights of a tensor-parallel rank, its partial sum, which the
        caller all-reduces before `decoder_mlp`."""

    def decoder_mlp(
        self, weights: DecoderWeights, attention: ms.Tensor, residual: ms.Tensor, rotary: Any, inputs: StepInputs
    ) -> tuple[ms.Tensor, ms.Tensor]:
        """The rest of the layer from the (all-reduced) o projection's output: residual add + RMSNorm,
        SiLU(gate) * up, down -> (down's output, a rank's partial sum; residual stream)."""

    def routed_experts(self, x: ms.Tensor, experts: ExpertWeights) -> ms.Tensor:
        """x [T, E] (the post-attention norm's output) -> [T, E]: for each token, its experts and their weights by
        the router's logits as `experts.routing` says, and the sum of each chosen expert's down(SiLU(gate(x)) *
        up(x)) times its weight; plus the shared expert's output if there is one (times sigmoid(shared_gate(x)) if
        the model gates it)."""

    def latent_attention(self, weights: LatentWeights, x: ms.Tensor, rotary: Any, inputs: StepInputs) -> ms.Tensor:
        """x [T, E] (the input norm's output) -> the o projection's output [T, E] of multi-head latent attention:
        the query (through its low rank and norm if any); the latent (kv_a's first L, RMS-normalised) and the key's
        rotated part (kv_a's last R) written to the cache at the step's slots; for each head, causal attention of
        [q_nope @ W_UK, rotated q_rope] over each request's cached rows (W_UK, W_UV: kv_b's rows of the head's
        keys and values), the weighted latents times W_UV^T; o. `rotary` is what `rotary` made of tables of R."""

    def copy_slots(self, k_cache: Parameter, v_cache: Parameter, src: ms.Tensor, dst: ms.Tensor) -> None:
        """Copy token slots src[i] -> dst[i] of every KV head in both caches (vLLM's copy-on-write)."""

    def copy_latent_slots(self, cache: Parameter, src: ms.Tensor, dst: ms.Tensor) -> None:
        """Copy rows src[i] -> dst[i] of a latent cache (vLLM's copy-on-write)."""
