"""The Ascend implementation: MindSpore's fused NPU kernels (written against MindSpore 2.10's `mindspore.ops`).

KV cache layout: [num_blocks, block_size, K, D], the layout ReshapeAndCache writes and PagedAttention reads, with
vLLM's block ids indexing the first axis. These kernels are tuned for block size 128, which
the platform must set when it runs on Ascend; any block size is correct. Per step:
- rope + cache: ApplyRotaryPosEmb rotates q and k in place of the basic ops ([T, H*D] / [T, K*D], cos/sin tables
  looked up by position), then ReshapeAndCache writes k and v at the step's slots;
- attention: a decode-only step runs PagedAttention over each request's block table and context length; a step
  with any prefill (first or chunked) gathers each request's whole context from the cache into contiguous rows
  and runs FlashAttentionScore in the varlen "TND" layout with right-down causal masking (sparse_mode 3), so a
  chunk's queries see the cached prefix as well as themselves — the pattern MindSpore's own LLM stack uses;
- norms: RmsNorm and AddRmsNorm (the residual add fused into the next norm), SwiGLU: Swiglu;
- routed experts (mixture of experts): the router's matmul, MoeGatingTopKSoftmax (softmax and top k), the top
  k's weights normalised if the model asks (DeepSeek-V3's and GLM-4.5's sigmoid, bias-corrected, group-limited
  routing from basic ops instead: ops/ascend_routing.py), MoeInitRoutingV2 (each token's rows copied out and
  grouped by expert, with each expert's count), GroupedMatmulV4 over the stacked experts' gate_up weights, Swiglu,
  GroupedMatmulV4 over their down weights, and MoeTokenUnpermute (each token's rows gathered back and summed with
  its weights) —
  the composition vllm-mindspore's fused MoE runs on one rank — plus a shared expert (Qwen2-MoE) as a dense MLP
  scaled by the sigmoid of its gate. Expert weights are stacked [X, in, out];
- int8 linear layers (layers/int8.py): W8A16 through WeightQuantBatchMatmul (x in bfloat16 times q scaled per
  output channel), W8A8 through DynamicQuantExt (each token's input to int8 with its own scale) and
  QuantBatchMatmul (int8 products, scaled by the channel and token scales). An int8 weight is one tensor
  [in + 4, out]: q^T, then its float32 channel scales as four rows of bytes, so that it loads like any linear
  weight; the scales are read out once, on the layer's first step.
Multi-head latent attention (DeepSeek's MLA): ops/ascend_latent.py (ReshapeAndCache of one latent row per token,
PagedAttention with mla_v_dim on absorbed queries for decode, FlashAttentionScore on the decompressed context for
prefill).
No NPU is reachable where this was written: tests/unit/test_ascend_ops.py checks every call against the
primitives' real signatures and runs whole models through numpy stand-ins of their documented semantics.
"""

from dataclasses import dataclass
from typing import Any, NamedTuple

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, mint, ops

from vms_plugin.layers.precision import storage_dtype
from vms_plugin.ops.ascend_latent import latent_attention, latent_cache_shape
from vms_plugin.ops.ascend_lora import adapter_products
from vms_plugin.ops.ascend_routing import route
from vms_plugin.ops.interface import DecoderStack, DecoderWeights, ExpertWeights, LatentWeights, ModelEnds
from vms_plugin.worker.batch import StepBatch

CAUSAL_MASK_SIZE = 2048  # FlashAttentionScore's compressed causal mask for sparse_mode 3 is 2048 x 2048
INT8_SCALE_ROWS = 4  # an int8 weight's float32 channel scales, as bytes, under q^T
INT8_ACTIVATIONS = ms.bfloat16  # what the quantized matmuls take and give (they take no float32)


class AscendInputs(NamedTuple):
    """T tokens of R requests; S = the sum of the requests' context lengths."""

    positions: ms.Tensor  # [T] int32
    slot_mapping: ms.Tensor  # [T] int32: where each new K/V goes
    block_tables: ms.Tensor  # [R, B] int32
    seq_lens: ms.Tensor  # [R] int32: context length of each request including this step's tokens
    actual_seq_qlen: ms.Tensor  # [R] int32: cumulative query lengths (TND layout)
    actual_seq_kvlen: ms.Tensor  # [R] int32: cumulative context lengths
    context_slots: ms.Tensor  # [S] int32: cache slot of every context position of every request, in order
    decode_only: bool  # every request runs exactly one token
    token_adapters: ms.Tensor | None = None  # [T] int32: each token's LoRA slot (-1: none); None: no adapter runs


@dataclass(frozen=True)
class Primitives:
    """The MindSpore primitive classes used, in one place, so tests can stand in for them."""

    rms_norm: Any
    add_rms_norm: Any
    apply_rotary_pos_emb: Any
    reshape_and_cache: Any
    paged_attention: Any
    flash_attention_score: Any
    swiglu: Any
    weight_quant_batch_matmul: Any
    dynamic_quant: Any
    quant_batch_matmul: Any
    moe_gating_top_k_softmax: Any
    moe_init_routing_v2: Any
    grouped_matmul_v4: Any
    moe_token_unpermute: Any

    @classmethod
    def from_mindspore(cls) -> "Primitives":
        from mindspore import ops
        from mindspore.ops import auto_generate

        return cls(
            rms_norm=ops.RmsNorm,
            add_rms_norm=auto_generate.AddRmsNorm,
            apply_rotary_pos_emb=ops.ApplyRotaryPosEmb,
            reshape_and_cache=ops.ReshapeAndCache,
            paged_attention=ops.PagedAttention,
            flash_attention_score=auto_generate.FlashAttentionScore,
            swiglu=auto_generate.Swiglu,
            weight_quant_batch_matmul=auto_generate.WeightQuantBatchMatmul,
            dynamic_quant=auto_generate.DynamicQuantExt,
            quant_batch_matmul=auto_generate.QuantBatchMatmul,
            moe_gating_top_k_softmax=auto_generate.MoeGatingTopKSoftmax,
            moe_init_routing_v2=auto_generate.MoeInitRoutingV2,
            grouped_matmul_v4=auto_generate.GroupedMatmulV4,
            moe_token_unpermute=auto_generate.MoeTokenUnpermute,
        )


def int8_device_weight(quantized: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """q [out, in] int8 and its channel scales [out] -> [in + 4, out] int8: q^T, then row in + j holding byte j
    of each column's float32 scale."""
    scale_bytes = np.ascontiguousarray(scales, dtype="<f4").view(np.int8).reshape(-1, INT8_SCALE_ROWS).T
    return np.concatenate([quantized.T, scale_bytes])


def int8_scales(device_weight: np.ndarray) -> np.ndarray:
    """The float32 channel scales [out] out of an int8 device weight's last rows."""
    return np.ascontiguousarray(device_weight[-INT8_SCALE_ROWS:].T).view("<f4").reshape(-1)


class Int8Parts(NamedTuple):
    """An int8 device weight split for the quantized matmuls."""

    quantized: Tensor  # q^T [in, out] int8
    scales: Tensor  # [out]: bfloat16 for WeightQuantBatchMatmul's antiquant_scale, float32 for QuantBatchMatmul


def ascend_inputs(batch: StepBatch) -> AscendInputs:
    num_tokens, num_reqs = len(batch.input_ids), len(batch.query_starts)
    query_lens = np.diff(np.append(batch.query_starts, num_tokens)).astype(np.int32)
    seq_lens = (batch.positions[batch.query_starts + query_lens - 1] + 1).astype(np.int32)
    context_slots = np.concatenate([batch.context_slots[r, : seq_lens[r]] for r in range(num_reqs)])
    return AscendInputs(
        Tensor(batch.positions),
        Tensor(batch.slot_mapping),
        Tensor(batch.block_table),
        Tensor(seq_lens),
        Tensor(np.cumsum(query_lens).astype(np.int32)),
        Tensor(np.cumsum(seq_lens).astype(np.int32)),
        Tensor(context_slots.astype(np.int32)),
        bool((query_lens == 1).all()),
        Tensor(batch.adapter_slots[batch.token_requests]) if (batch.adapter_slots >= 0).any() else None,
    )


class AscendOps:
    name = "ascend"

    def __init__(self, primitives: Primitives | None = None) -> None:
        self.p = primitives or Primitives.from_mindspore()
        self._add_rms_norm = self.p.add_rms_norm()
        self._rotary = self.p.apply_rotary_pos_emb(0)  # cos_format 0: tables [max_positions, D]
        self._reshape_and_cache = self.p.reshape_and_cache()
        self._swiglu = self.p.swiglu()
        self._weight_quant_matmul = self.p.weight_quant_batch_matmul()
        self._dynamic_quant = self.p.dynamic_quant()
        self._quant_matmul = self.p.quant_batch_matmul(dtype=INT8_ACTIVATIONS)
        self._gating_top_k = self.p.moe_gating_top_k_softmax()
        self._init_routing = self.p.moe_init_routing_v2()
        self._grouped_matmul = self.p.grouped_matmul_v4()
        self._token_unpermute = self.p.moe_token_unpermute()
        self._int8_parts: dict[int, tuple[Parameter, Int8Parts]] = {}  # by id of the weight, which it keeps alive
        self._rms_norms: dict[float, Any] = {}
        self._attention: dict[tuple, Any] = {}
        self._causal_mask = Tensor(np.triu(np.ones((CAUSAL_MASK_SIZE, CAUSAL_MASK_SIZE), np.uint8), k=1))

    def attention_inputs(self, batch: StepBatch) -> AscendInputs:
        return ascend_inputs(batch)

    def kv_cache_shape(self, num_slots: int, block_size: int, kv_heads: int, head_dim: int) -> tuple[int, ...]:
        return (num_slots // block_size, block_size, kv_heads, head_dim)

    def latent_cache_shape(self, num_slots: int, block_size: int, width: int) -> tuple[int, ...]:
        return latent_cache_shape(num_slots, block_size, width)

    def latent_attention(self, weights: LatentWeights, x, rotary, inputs: AscendInputs):
        return latent_attention(self, weights, x, rotary, inputs)

    def copy_latent_slots(self, cache: Parameter, src, dst) -> None:
        rows = cache.reshape(-1, cache.shape[-1])[src]
        self._reshape_and_cache(rows, None, cache, None, dst)

    def linear_weight_shape(self, in_features: int, out_features: int, dtype: str) -> tuple[int, ...]:
        return (in_features + INT8_SCALE_ROWS if dtype == "int8" else in_features, out_features)

    def linear_weight(self, weight: np.ndarray, dtype: str, scales: np.ndarray | None = None) -> Tensor:
        if dtype == "int8":
            return Tensor(int8_device_weight(weight, scales))
        # mint.matmul on a pre-transposed weight: no transpose per call
        return Tensor(np.ascontiguousarray(weight.T)).astype(storage_dtype(dtype))

    def linear(self, x, weight, bias, out_features, int8_activations=False):
        return self._matmul(x, weight, bias, int8_activations)

    def embedding(self, ids, weight, width):
        vocab = weight.shape[1]
        inside = mint.logical_and(ids >= 0, ids < vocab)  # other ids are another tensor-parallel rank's tokens
        clamped = mint.clamp(ids, 0, vocab - 1)
        if weight.dtype == ms.int8:  # an int8 output projection (quantize_lm_head): scale[id] * q[id]
            parts = self._int8_parts_of(weight, ms.float32)
            rows = ops.gather(parts.quantized, clamped, 1).swapaxes(0, 1).astype(ms.float32)
            rows = rows * ops.gather(parts.scales, clamped, 0).unsqueeze(-1)
        else:
            rows = ops.gather(weight, clamped, 1).swapaxes(0, 1).astype(ms.float32)  # columns of W^T [width, vocab]
        return rows * inside.unsqueeze(-1).astype(ms.float32)

    def _matmul(self, x, weight, bias, int8_activations: bool = False):
        if weight.dtype == ms.int8:
            y = self._int8_matmul(x, weight, int8_activations)
        elif weight.dtype != x.dtype:
            # A 16-bit weight multiplies activations cast to its type (the cube unit's inputs), widened back.
            y = mint.matmul(x.astype(weight.dtype), weight).astype(x.dtype)
        else:
            y = mint.matmul(x, weight)
        return y if bias is None else y + bias

    def _int8_matmul(self, x, weight: Parameter, int8_activations: bool):
        parts = self._int8_parts_of(weight, ms.float32 if int8_activations else INT8_ACTIVATIONS)
        if int8_activations:
            quantized_x, token_scales = self._dynamic_quant(x.astype(INT8_ACTIVATIONS))
            y = self._quant_matmul(quantized_x, parts.quantized, parts.scales, None, None, token_scales)
        else:
            y = self._weight_quant_matmul(x.astype(INT8_ACTIVATIONS), parts.quantized, parts.scales)
        return y.astype(ms.float32)

    def _int8_parts_of(self, weight: Parameter, scale_type: ms.Type) -> Int8Parts:
        """q^T and the scales (as `scale_type`) of an int8 weight, read out on their first use: a model's weights
        do not change once loaded. A tied int8 table is read with float32 scales by the embedding and with the
        matmul's by the output projection; q^T is kept once."""
        key = (id(weight), scale_type)
        if key not in self._int8_parts:
            known = [parts for (weight_id, _), (_, parts) in self._int8_parts.items() if weight_id == id(weight)]
            quantized = known[0].quantized if known else weight[:-INT8_SCALE_ROWS]
            parts = Int8Parts(quantized, Tensor(int8_scales(weight.asnumpy())).astype(scale_type))
            self._int8_parts[key] = (weight, parts)
        return self._int8_parts[key][1]

    def rotary(self, cos: np.ndarray, sin: np.ndarray) -> tuple[Tensor, Tensor]:
        return Tensor(cos), Tensor(sin)

    def causal_lm(self, stack: DecoderStack, ends: ModelEnds, ids, rotary, inputs: AscendInputs, logits_index):
        x, residual = self.embedding(ids, ends.embedding, ends.final_norm.shape[0]), None
        for weights in stack.layers:
            attention, residual = self.decoder_attention(weights, x, residual, rotary, inputs)
            x, residual = self.decoder_mlp(weights, attention, residual, rotary, inputs)
        if logits_index is not None:
            x, residual = x[logits_index], residual[logits_index]
        hidden, _ = self.add_rms_norm(x, residual, ends.final_norm, ends.eps)
        return self.linear(hidden, ends.head, None, ends.vocab, ends.int8_activations)

    def decoder_attention(self, weights: DecoderWeights, x, residual, rotary, inputs: AscendInputs):
        w = weights
        if residual is None:
            x, residual = self.rms_norm(x, w.input_norm, w.eps), x
        else:
            x, residual = self.add_rms_norm(x, residual, w.input_norm, w.eps)
        qkv = self._with_adapters(self._matmul(x, w.qkv, w.qkv_bias, w.int8_activations), x, w, "qkv", inputs)
        qk_norm = None if w.q_norm is None else (w.q_norm, w.k_norm, w.eps)
        q = self.rope_and_cache(qkv, rotary, w.k_cache, w.v_cache, inputs, w.heads, qk_norm)
        attention = self.paged_attention(q, w.k_cache, w.v_cache, inputs, w.heads, w.scale)
        out = self._with_adapters(self._matmul(attention, w.o, w.o_bias, w.int8_activations), attention, w, "o", inputs)
        return out, residual

    def decoder_mlp(self, weights: DecoderWeights, attention, residual, rotary, inputs: AscendInputs):
        w = weights
        x, residual = self.add_rms_norm(attention, residual, w.post_norm, w.eps)
        gate_up = self._with_adapters(self._matmul(x, w.gate_up, None, w.int8_activations), x, w, "gate_up", inputs)
        act = self._swiglu(gate_up, -1)
        return self._with_adapters(
            self._matmul(act, w.down, None, w.int8_activations), act, w, "down", inputs
        ), residual

    @staticmethod
    def _with_adapters(y, x, weights: DecoderWeights, target: str, inputs: AscendInputs):
        """y plus the products of the tokens' LoRA adapters for linear layer `target` (ops/ascend_lora.py)."""
        if weights.adapters is None or inputs.token_adapters is None:
            return y
        return y + adapter_products(x, weights.adapters, target, inputs.token_adapters, weights.prepared)

    def routed_experts(self, x, experts: ExpertWeights):
        if experts.gate_up.dtype == ms.int8:
            raise ValueError("vms_plugin on Ascend serves mixture-of-experts weights as float16 or bfloat16; not int8")
        if experts.gate_up.shape[0] != experts.num_experts:
            raise ValueError(
                "vms_plugin on Ascend does not split experts between ranks yet; drop --enable-expert-parallel"
            )
        routing = experts.routing
        logits = self._matmul(x, experts.router, None).astype(ms.float32)  # scores in float32, as the references
        if routing.sigmoid or routing.groups > 1 or experts.correction_bias is not None:  # DeepSeek-V3, GLM-4.5
            weights, chosen = route(logits, routing, experts.correction_bias)
        else:
            weights, chosen, _ = self._gating_top_k(logits, None, routing.top_k)  # (top k, experts, row index)
            if routing.normalize:
                weights = weights / weights.sum(-1, keepdims=True)
            weights = weights * routing.scaling
        num_experts = experts.gate_up.shape[0]
        # Dropless routing (no capacity): rows [T * k, E] grouped by expert, where each (token, choice) went, and
        # each expert's row count (flag 2: counts, not their running sum).
        rows, where, counts, _ = self._init_routing(x, chosen, 0, 0, num_experts, 0, 2, False)
        counts = counts.astype(ms.int64)
        gate_up = self._grouped_experts(rows, experts.gate_up, counts)
        down = self._grouped_experts(self._swiglu(gate_up, -1), experts.down, counts)
        out = self._token_unpermute(down, where, weights, padded_mode=False, restore_shape=None)
        if experts.shared_gate_up is None:
            return out
        shared_gate_up = self._matmul(x, experts.shared_gate_up, None, experts.int8_activations)
        shared = self._matmul(self._swiglu(shared_gate_up, -1), experts.shared_down, None, experts.int8_activations)
        if experts.shared_gate is not None:
            shared = shared * mint.sigmoid(self._matmul(x, experts.shared_gate, None))
        return out + shared

    def _grouped_experts(self, rows, stacked, counts):
        """Each expert's rows (consecutive, `counts` of them per expert) times its weight [in, out] of `stacked`."""
        products = self._grouped_matmul(
            [rows.astype(stacked.dtype)], [stacked], group_list=counts, split_item=3, group_type=0, group_list_type=1
        )
        return products[0].astype(ms.float32)

    def rms_norm(self, x, weight, eps):
        if eps not in self._rms_norms:
            self._rms_norms[eps] = self.p.rms_norm(eps)
        return self._rms_norms[eps](x, weight)[0]  # (y, rstd)

    def add_rms_norm(self, x, residual, weight, eps):
        normed, _, summed = self._add_rms_norm(x, residual, weight, eps)  # (y, rstd, x1 + x2)
        return normed, summed

    def rope_and_cache(self, qkv, rotary, k_cache, v_cache, inputs: AscendInputs, heads, qk_norm):
        num_heads, kv_heads, head_dim = heads
        q, k, v = mint.split(qkv, [num_heads * head_dim, kv_heads * head_dim, kv_heads * head_dim], dim=-1)
        if qk_norm is not None:
            q_weight, k_weight, eps = qk_norm
            q = self.rms_norm(q.reshape(-1, head_dim), q_weight, eps).reshape(-1, num_heads * head_dim)
            k = self.rms_norm(k.reshape(-1, head_dim), k_weight, eps).reshape(-1, kv_heads * head_dim)
        q, k = self._rotate(q, k, rotary, inputs.positions, heads)
        self._reshape_and_cache(k, v, k_cache, v_cache, inputs.slot_mapping)
        return q

    def _rotate(self, q, k, rotary, positions, heads):
        """q [T, H * D] and k [T, K * D] rotated; with tables narrower than D (partial rotary) only each head's
        first features, the rest kept."""
        num_heads, kv_heads, head_dim = heads
        width = rotary[0].shape[-1]
        if width == head_dim:
            return self._rotary(q, k, *rotary, positions)
        q, k = q.reshape(-1, num_heads, head_dim), k.reshape(-1, kv_heads, head_dim)
        q_turned, k_turned = self._rotary(
            q[..., :width].reshape(-1, num_heads * width),
            k[..., :width].reshape(-1, kv_heads * width),
            *rotary,
            positions,
        )
        q = mint.cat([q_turned.reshape(-1, num_heads, width), q[..., width:]], dim=-1)
        k = mint.cat([k_turned.reshape(-1, kv_heads, width), k[..., width:]], dim=-1)
        return q.reshape(-1, num_heads * head_dim), k.reshape(-1, kv_heads * head_dim)

    def paged_attention(self, q, k_cache, v_cache, inputs: AscendInputs, heads, scale):
        num_heads, kv_heads, head_dim = heads
        if inputs.decode_only:
            kernel = self._kernel("paged", self.p.paged_attention, num_heads, scale, kv_heads)
            return kernel(q, k_cache, v_cache, inputs.block_tables, inputs.seq_lens)
        kernel = self._kernel(
            "flash", self.p.flash_attention_score, num_heads, scale_value=scale, input_layout="TND", sparse_mode=3
        )
        rows = (-1, kv_heads, head_dim)
        keys = k_cache.reshape(rows)[inputs.context_slots]  # [S, K, D] contiguous per request
        values = v_cache.reshape(rows)[inputs.context_slots]
        out = kernel(
            q.reshape(-1, num_heads, head_dim),
            keys,
            values,
            attn_mask=self._causal_mask,
            actual_seq_qlen=inputs.actual_seq_qlen,
            actual_seq_kvlen=inputs.actual_seq_kvlen,
        )[3]  # (softmax_max, softmax_sum, softmax_out, attention_out)
        return out.reshape(-1, num_heads * head_dim)

    def copy_slots(self, k_cache: Parameter, v_cache: Parameter, src, dst) -> None:
        """Copy-on-write through the cache-writing kernel: read the source slots, write them at the targets."""
        rows = k_cache.shape[2:]
        keys = k_cache.reshape((-1, *rows))[src].reshape(len(src), -1)
        values = v_cache.reshape((-1, *rows))[src].reshape(len(src), -1)
        self._reshape_and_cache(keys, values, k_cache, v_cache, dst)

    def _kernel(self, kind: str, primitive, *args, **kwargs):
        key = (kind, args, tuple(sorted(kwargs.items())))
        if key not in self._attention:
            self._attention[key] = primitive(*args, **kwargs)
        return self._attention[key]
