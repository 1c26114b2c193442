"""The CPU implementation: vms's C++ kernels (kernels/cpu_kernels.cc), a whole step of the model in one launch on
one rank, half a layer per launch under tensor parallelism.

KV caches are head-major, [K, slots, D], so that one KV head's rows are contiguous for attention; values are a row
per slot, keys tiles of 16 slots transposed (cpu_kernels.cc's KvCache), so the slots are rounded up to a multiple
of 16. Any block size works; multiples of 16 (vLLM's own are) let attention read whole tiles in place. Linear
weights are packed in 64-column panels (kernels/pack.py) so that decode streams them in order.
Both are stored as float32, float16 or bfloat16, and linear weights also as int8 with per-channel scales; the
kernels read the type from each tensor.
"""

from collections.abc import Sequence
from enum import IntEnum

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, ops
from mindspore.common.np_dtype import bfloat16 as numpy_bfloat16

from vms_plugin.attention.paged import AttentionInputs, attention_inputs
from vms_plugin.kernels import cpu as kernels
from vms_plugin.kernels.pack import pack_int8_linear_weight, pack_linear_weight, packed_shape
from vms_plugin.layers.lora import TARGETS
from vms_plugin.ops.interface import DecoderStack, DecoderWeights, ExpertWeights, LatentWeights, ModelEnds

KEY_TILE_ROWS = 16  # kKeyTileRows in cpu_kernels.cc


class CpuOps:
    name = "cpu"

    def __init__(self) -> None:
        self._constants: dict[tuple, Tensor] = {}  # scalars, zero biases, layer configs and row indices, made once

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

    def _every_row(self, rows: int) -> Tensor:
        """logits_index [0, rows): a step of decodes, made once per batch size."""
        key = ("every row", rows)
        if key not in self._constants:
            self._constants[key] = Tensor(np.arange(rows, dtype=np.int32))
        return self._constants[key]

    def attention_inputs(self, batch) -> AttentionInputs:
        return attention_inputs(batch)

    def kv_cache_shape(self, num_slots: int, block_size: int, kv_heads: int, head_dim: int) -> tuple[int, ...]:
        return (kv_heads, -(-num_slots // KEY_TILE_ROWS) * KEY_TILE_ROWS, head_dim)

    def latent_cache_shape(self, num_slots: int, block_size: int, width: int) -> tuple[int, ...]:
        return (num_slots, width)  # a row per slot

    def linear_weight_shape(self, in_features: int, out_features: int, dtype: str) -> tuple[int, ...]:
        return packed_shape(in_features, out_features, dtype)

    def linear_weight(self, weight: np.ndarray, dtype: str, scales: np.ndarray | None = None) -> Tensor:
        if dtype == "int8":
            return Tensor(pack_int8_linear_weight(weight, scales))
        packed = pack_linear_weight(weight, dtype)
        if dtype == "bfloat16":
            # bfloat16 arrives as its bit patterns, read as MindSpore's numpy bfloat16: a host tensor of its own. A
            # MindSpore dtype view would be copied at every launch, and copying it once with a MindSpore op grew
            # the runtime's memory pool by 620 MB while loading SmolLM2 (bfloat16 loaded +727 MB, float32 +543).
            return Tensor(packed.view(numpy_bfloat16))
        return Tensor(packed)

    def linear(self, x, weight, bias, out_features, int8_activations=False):
        options = self._constant((float(int8_activations),))
        return kernels.linear(x, weight, self._zeros(out_features) if bias is None else bias, options)

    def embedding(self, ids, weight, width):
        return kernels.packed_rows(ids, weight, self._zeros(width))

    def rms_norm(self, x, weight, eps):
        return kernels.rms_norm(x, weight, self._constant((eps,)))

    def add_rms_norm(self, x, residual, weight, eps):
        return kernels.add_rms_norm(x, residual, weight, self._constant((eps,)))

    def rotary(self, cos: np.ndarray, sin: np.ndarray) -> Tensor:
        return Tensor(np.stack([cos, sin]))  # one input per launch instead of two

    def causal_lm(self, stack: DecoderStack, ends: ModelEnds, ids, rotary, inputs: AttentionInputs, logits_index):
        if logits_index is None:
            logits_index = self._every_row(ids.shape[0])
        launch = causal_lm_inputs(stack, ends, ids, rotary, inputs.indices, logits_index, self._zeros(ends.vocab))
        return kernels.causal_lm(*launch)

    def decoder_attention(self, weights: DecoderWeights, x, residual, rotary, inputs: AttentionInputs):
        return self._layer_part(LayerPart.ATTENTION, weights, x, residual, rotary, inputs)

    def decoder_mlp(self, weights: DecoderWeights, attention, residual, rotary, inputs: AttentionInputs):
        return self._layer_part(LayerPart.MLP, weights, attention, residual, rotary, inputs)

    @staticmethod
    def _layer_part(part: "LayerPart", weights: DecoderWeights, x, residual, rotary, inputs: AttentionInputs):
        """One launch of the DecoderLayer kernel for one of a layer's halves: the same inputs, the part named in the
        constants."""
        has_residual = residual is not None
        key = (has_residual, part)
        if key not in weights.prepared:
            weights.prepared[key] = Tensor(layer_constants(weights, has_residual, part))
        if "adapters" not in weights.prepared:
            weights.prepared["adapters"] = Tensor(adapter_table([weights]))
        # A layer whose MLP is routed experts has no gate_up or down; its attention half reads neither, and qkv
        # stands in for them (the launch takes four weights of one type).
        gate_up = weights.qkv if weights.gate_up is None else weights.gate_up
        down = weights.qkv if weights.down is None else weights.down
        return kernels.decoder_layer(
            x,
            residual if has_residual else x,
            weights.prepared[key],
            weights.qkv,
            weights.o,
            gate_up,
            down,
            rotary,
            inputs.indices,
            weights.k_cache,
            weights.v_cache,
            weights.prepared["adapters"],
        )

    def routed_experts(self, x, experts: ExpertWeights):
        e = experts
        if "settings" not in e.prepared:
            e.prepared["settings"] = Tensor(expert_settings(e))
        # The kernel takes every input: without a shared expert (or its gate) the router stands in, unread.
        shared = tuple(e.router if w is None else w for w in (e.shared_gate_up, e.shared_down, e.shared_gate))
        return kernels.routed_experts(x, e.router, e.gate_up, e.down, e.prepared["settings"], shared)

    def latent_attention(self, weights: LatentWeights, x, rotary, inputs: AttentionInputs):
        w, shape, int8 = weights, weights.shape, weights.int8_activations
        query_width = shape.heads * (shape.nope + shape.rope)
        if w.q_a is None:
            q = self.linear(x, w.q, None, query_width, int8)
        else:
            q_a = self.rms_norm(self.linear(x, w.q_a, None, shape.query_rank, int8), w.q_a_norm, w.eps)
            q = self.linear(q_a, w.q, None, query_width, int8)
        kv = self.linear(x, w.kv_a, None, shape.latent + shape.rope, int8)
        if "latent" not in w.prepared:
            w.prepared["latent"] = latent_settings(w)
        settings, w_uk, w_uv = w.prepared["latent"]
        out = kernels.latent_attention(q, kv, settings, w_uk, w_uv, rotary, inputs.indices, w.cache)
        return self.linear(out, w.o, None, x.shape[1], int8)

    def copy_slots(self, k_cache: Parameter, v_cache: Parameter, src, dst) -> None:
        kernels.copy_slots(k_cache, v_cache, src, dst)

    def copy_latent_slots(self, cache: Parameter, src, dst) -> None:
        kernels.copy_rows(cache, src, dst)


class LayerPart(IntEnum):
    """Which of a decoder layer a DecoderLayer launch computes (the constants' last header float)."""

    WHOLE = 0
    ATTENTION = 1  # norm, qkv, attention, o: returns o's output
    MLP = 2  # from o's output: residual add, norm, gate_up, SiLU, down


def layer_constants(weights: DecoderWeights, has_residual: bool, part: LayerPart = LayerPart.WHOLE) -> np.ndarray:
    """A layer's settings and small vectors in one float32 array, as cpu_kernels.cc's DecoderLayer reads them.

    Launches cost MindSpore ~5 us per input, so the six vectors and the settings travel as one tensor, made on the
    layer's first step: a model's weights do not change once loaded.
    """
    heads, kv_heads, head_dim = weights.heads
    qkv_width, hidden = (heads + 2 * kv_heads) * head_dim, weights.input_norm.shape[0]
    qk_norm = weights.q_norm is not None
    header = [
        weights.eps,
        float(has_residual),
        weights.eps if qk_norm else 0.0,
        weights.scale,
        weights.intermediate_size,
        float(weights.int8_activations),
        qkv_width,
        float(part),
    ]

    def values(vector, size: int) -> np.ndarray:
        return np.zeros(size, np.float32) if vector is None else vector.asnumpy().astype(np.float32)

    vectors = [
        values(weights.input_norm, hidden),
        values(weights.post_norm, hidden),
        values(weights.qkv_bias, qkv_width),
        values(weights.o_bias, hidden),
        values(weights.q_norm, head_dim),
        values(weights.k_norm, head_dim),
    ]
    return np.concatenate([np.array(header, np.float32), *vectors])


def expert_settings(experts: ExpertWeights) -> np.ndarray:
    """A routed layer's settings as cpu_kernels.cc's ExpertSettings reads them: a header, then the correction bias
    if any; made on the layer's first step (the bias is loaded by then)."""
    e, r = experts, experts.routing
    header = [
        r.top_k,
        r.normalize,
        e.intermediate_size,
        e.int8_activations,
        e.shared_intermediate_size,
        e.shared_gate is not None,
        r.sigmoid,
        r.groups,
        r.top_groups,
        r.group_by_top_two,
        r.scaling,
        e.correction_bias is not None,
        e.first_expert,
        e.num_experts,
    ]
    bias = () if e.correction_bias is None else (e.correction_bias.asnumpy().astype(np.float32),)
    return np.concatenate([np.array(header, np.float32), *bias])


def latent_settings(weights: LatentWeights) -> tuple[Tensor, Tensor, Tensor]:
    """(settings as cpu_kernels.cc's LatentSettings reads them, W_UK [H, Dn, L], W_UV [H, Dv, L]): the absorbed
    projections are kv_b's rows per head, made once on the layer's first step (float32, as the checkpoint's)."""
    w, shape = weights, weights.shape
    header = [shape.heads, shape.nope, shape.rope, shape.latent, shape.value, w.scale, w.eps, w.interleaved]
    norm = w.kv_a_norm.asnumpy().astype(np.float32)
    settings = Tensor(np.concatenate([np.array(header, np.float32), norm]))
    w_uk, w_uv = w.absorbed_projections()
    return settings, Tensor(w_uk), Tensor(w_uv)


def causal_lm_inputs(
    stack: DecoderStack,
    ends: ModelEnds,
    ids: Tensor,
    rotary: Tensor,
    indices: Tensor,
    logits_index: Tensor,
    vocab_width: Tensor,
) -> tuple[Tensor, ...]:
    """The 16 inputs of a CausalLm launch (cpu_kernels.cc), its constants [L + 1, C], address table [L, 6] and
    adapter table [L + 1, 8] made on the stack's first launch.

    The table names each layer's weights and caches by their data's address: one input instead of six per layer.
    It stays valid while the stack does: the stack holds the Parameters, a model's weights do not change once
    loaded, and the model makes a new stack when it reallocates the caches. LoRA slots are filled in place.
    """
    if "launch" not in stack.prepared:
        signature = [(t.shape, t.dtype) for t in _addressed(stack.layers[0])]
        if any([(t.shape, t.dtype) for t in _addressed(w)] != signature for w in stack.layers):
            raise ValueError("a CausalLm launch needs every layer's weights and caches shaped and typed alike")
        layers = [layer_constants(w, has_residual=index > 0) for index, w in enumerate(stack.layers)]
        constants = np.stack([*layers, end_constants(ends, layers[0].size)])
        addresses = np.array([[t.data_ptr() for t in _addressed(w)] for w in stack.layers], dtype=np.int64)
        stack.prepared["launch"] = Tensor(constants), Tensor(addresses), Tensor(adapter_table(stack.layers))
    constants, addresses, adapters = stack.prepared["launch"]
    first = stack.layers[0]
    return (
        ids,
        constants,
        first.qkv,
        first.o,
        first.gate_up,
        first.down,
        rotary,
        indices,
        first.k_cache,
        first.v_cache,
        addresses,
        adapters,
        ends.embedding,
        ends.head,
        logits_index,
        vocab_width,
    )


def end_constants(ends: ModelEnds, width: int) -> np.ndarray:
    """The last row of a CausalLm launch's constants: [eps, int8 activations, E, the final norm [E]], zero padded."""
    norm = ends.final_norm.asnumpy().astype(np.float32)
    row = np.zeros(width, np.float32)
    row[:3] = ends.eps, float(ends.int8_activations), norm.size
    row[3 : 3 + norm.size] = norm
    return row


def _addressed(weights: DecoderWeights) -> tuple[Parameter, ...]:
    """A layer's tensors in the address table's order."""
    return weights.qkv, weights.o, weights.gate_up, weights.down, weights.k_cache, weights.v_cache


def adapter_table(layers: Sequence[DecoderWeights]) -> np.ndarray:
    """cpu_kernels.cc's adapter table [1 + L, 8] int64: the slots S and rank r, then the addresses of each layer's
    LoRA A and B (layers/lora.py) of qkv, o, gate_up and down; S = 0 when the model has no adapters. The arrays
    live as long as their layers and are filled in place."""
    table = np.zeros((1 + len(layers), 8), np.int64)
    if layers[0].adapters is None:
        return table
    table[0, :2] = layers[0].adapters.slots, layers[0].adapters.rank
    for row, weights in enumerate(layers, start=1):
        pairs = weights.adapters.pairs
        table[row] = [array.ctypes.data for target in TARGETS for array in pairs[target]]
    return table
