"""The Ascend implementation (ops/ascend.py) without an NPU: every primitive it uses is replaced by a stand-in
that first binds the call to the real MindSpore 2.10 primitive's signature (a wrong name, count or keyword
fails here as it would on the device), then computes the result the primitive documents, with numpy. Whole
tiny models then run through it and must give transformers' logits: the cache layout, block tables, slot
mapping, varlen (TND) offsets and the decode / prefill split are all on that path."""

import inspect
import itertools
from typing import ClassVar

import numpy as np
import pytest
from offline_model import BLOCK_SIZE, mindspore_step
from test_model_logits import TOLERANCE, assert_logits_match_transformers
from tiny_models import ARCHITECTURES, DEEPSEEK_ARCHITECTURES, MOE_ARCHITECTURES, VOCAB_SIZE

import vms_plugin.ops as ops_module


def as_np(x):
    return None if x is None else x.asnumpy()


def rms(x, gamma, eps):
    rstd = 1 / np.sqrt((x * x).mean(-1, keepdims=True) + eps)
    return x * rstd * gamma, rstd


def rotate(x, cos, sin, heads):
    shaped = x.reshape(len(x), heads, -1)
    half = shaped.shape[-1] // 2
    rotated = np.concatenate([-shaped[..., half:], shaped[..., :half]], axis=-1)
    return (shaped * cos[:, None] + rotated * sin[:, None]).reshape(x.shape)


def attend(q, keys, values, scale, visible):
    """q [H, D] over keys/values [L, K, D], the first `visible` of them."""
    group = q.shape[0] // keys.shape[1]
    k = np.repeat(keys[:visible], group, axis=1)  # [L, H, D]
    v = np.repeat(values[:visible], group, axis=1)
    scores = np.einsum("hd,lhd->hl", q, k) * scale
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    return np.einsum("hl,lhd->hd", probs / probs.sum(-1, keepdims=True), v)


def rms_norm(init, x, gamma):
    y, rstd = rms(as_np(x), as_np(gamma), init["epsilon"])
    return y, rstd


def add_rms_norm(init, x1, x2, gamma, epsilon):
    summed = as_np(x1) + as_np(x2)
    y, rstd = rms(summed, as_np(gamma), epsilon)
    return y, rstd, summed


def apply_rotary_pos_emb(init, query, key, cos, sin, position_ids):
    assert init["cos_format"] == 0
    positions = as_np(position_ids)
    c, s = as_np(cos)[positions], as_np(sin)[positions]
    head_dim = c.shape[-1]
    q, k = as_np(query), as_np(key)
    return rotate(q, c, s, q.shape[1] // head_dim), rotate(k, c, s, k.shape[1] // head_dim)


def reshape_and_cache(init, key, value=None, key_cache=None, value_cache=None, slot_mapping=None):
    slots = as_np(slot_mapping)
    for cache, new in ((key_cache, key), (value_cache, value)):
        if cache is None:  # a latent cache has no values (DeepSeek's MLA)
            continue
        blocks, block_size, kv_heads, head_dim = cache.shape
        data = as_np(cache).reshape(blocks * block_size, kv_heads, head_dim)
        data[slots] = as_np(new).reshape(len(slots), kv_heads, head_dim)
        cache.set_data(ms_tensor(data.reshape(cache.shape)))
    return np.zeros(1, np.float32)


def paged_attention(init, query, key_cache, value_cache=None, block_tables=None, context_lens=None, **_):
    """With mla_v_dim > 0 (MLA) the values are the key cache's first mla_v_dim features of each row."""
    q, tables, lengths = as_np(query), as_np(block_tables), as_np(context_lens)
    k_cache, v_cache = as_np(key_cache), as_np(value_cache)
    heads, block_size = init["head_num"], k_cache.shape[1]
    assert init["kv_head_num"] == k_cache.shape[2]
    value_dim = init.get("mla_v_dim") or v_cache.shape[-1]
    out = np.zeros((len(q), heads * value_dim), np.float32)
    for r, (table, length) in enumerate(zip(tables, lengths, strict=True)):
        keys = k_cache[table].reshape(-1, *k_cache.shape[2:])  # the request's blocks, in order
        values = v_cache[table].reshape(-1, *v_cache.shape[2:])[..., :value_dim]
        out[r] = attend(q[r].reshape(heads, -1), keys, values, init["scale_value"], length).reshape(-1)
    assert block_size == k_cache.shape[1]
    return out


def flash_attention_score(init, query, key, value, attn_mask=None, actual_seq_qlen=None, actual_seq_kvlen=None, **_):
    assert (init["input_layout"], init["sparse_mode"]) == ("TND", 3)
    assert as_np(attn_mask).shape == (2048, 2048)
    q, k, v = as_np(query), as_np(key), as_np(value)
    q_ends, kv_ends = as_np(actual_seq_qlen), as_np(actual_seq_kvlen)
    out = np.zeros_like(q)
    q_start = kv_start = 0
    for q_end, kv_end in zip(q_ends, kv_ends, strict=True):
        q_len, kv_len = q_end - q_start, kv_end - kv_start
        for i in range(q_len):  # right-down causal: the last query sees every key
            visible = kv_len - q_len + i + 1
            out[q_start + i] = attend(
                q[q_start + i], k[kv_start:kv_end], v[kv_start:kv_end], init["scale_value"], visible
            )
        q_start, kv_start = q_end, kv_end
    return None, None, None, out


def swiglu(init, x, dim=-1):
    gate, up = np.split(as_np(x), 2, axis=dim)
    return gate / (1 + np.exp(-gate)) * up


def float_np(x):
    """A tensor's values as float32 numpy (numpy has no bfloat16)."""
    import mindspore as ms

    return x.astype(ms.float32).asnumpy()


def weight_quant_batch_matmul(init, x, weight, antiquant_scale, antiquant_offset=None, quant_scale=None, **kwargs):
    """y = x @ ((weight + offset) * scale) + bias, weight int8 [K, N], scale per output channel (CANN's
    aclnnWeightQuantBatchMatmulV2): x and the scale in float16 or bfloat16."""
    import mindspore as ms

    assert not init["transpose_x"] and not init["transpose_weight"] and init["antiquant_group_size"] == 0
    assert weight.dtype == ms.int8 and x.dtype in (ms.bfloat16, ms.float16) and antiquant_scale.dtype == x.dtype
    assert antiquant_offset is None and quant_scale is None and kwargs.get("bias") is None
    return as_bfloat16(float_np(x) @ (weight.asnumpy().astype(np.float32) * float_np(antiquant_scale)))


def dynamic_quant(init, x, smooth_scales=None):
    """Per row: scale = max|x| / 127, y = round(x / scale) as int8 (DynamicQuantExt's documented formula)."""
    import mindspore as ms

    assert x.dtype in (ms.bfloat16, ms.float16) and smooth_scales is None
    values = float_np(x)
    max_abs = np.abs(values).max(axis=-1)
    scales = np.where(max_abs > 0, max_abs / 127, 1).astype(np.float32)
    return np.clip(np.rint(values / scales[:, None]), -127, 127).astype(np.int8), scales


def quant_batch_matmul(init, x1, x2, scale, offset=None, bias=None, pertokenScaleOptional=None):
    """(x1 @ x2) * scale * pertoken_scale, int8 inputs with int32 products (aclnnQuantMatmulV4), out in `dtype`."""
    import mindspore as ms

    assert not init["transpose_x1"] and not init["transpose_x2"] and init["dtype"] == ms.bfloat16
    assert x1.dtype == ms.int8 and x2.dtype == ms.int8 and scale.dtype == ms.float32
    assert offset is None and bias is None and pertokenScaleOptional.dtype == ms.float32
    products = x1.asnumpy().astype(np.int64) @ x2.asnumpy().astype(np.int64)
    return as_bfloat16(products * scale.asnumpy()[None, :] * pertokenScaleOptional.asnumpy()[:, None])


def moe_gating_top_k_softmax(init, x, finished=None, k=1):
    """Softmax over the last axis (in float32), its k largest values and their indices in descending order, and
    each choice's row index j * T + t (CANN's MoeGatingTopKSoftmax)."""
    assert finished is None
    logits = float_np(x)
    probabilities = np.exp(logits - logits.max(-1, keepdims=True))
    probabilities /= probabilities.sum(-1, keepdims=True)
    chosen = np.argsort(-probabilities, axis=-1, kind="stable")[:, :k].astype(np.int32)
    rows = (np.arange(k)[None, :] * len(logits) + np.arange(len(logits))[:, None]).astype(np.int32)
    return np.take_along_axis(probabilities, chosen, -1), chosen, rows


def moe_init_routing_v2(init, x, expert_idx, active_num, capacity, expert_num, drop_pad_mode, counts_flag, before):
    """Dropless routing (active_num 0, no capacity, no drop/pad): the rows of x repeated for each of its choices,
    sorted by expert (stably: by token, then choice), where each (token, choice) landed in that order, and each
    expert's row count (counts_flag 2)."""
    assert (active_num, capacity, drop_pad_mode, counts_flag, before) == (0, 0, 0, 2, False)
    chosen = as_np(expert_idx)
    assert chosen.dtype == np.int32
    flat = chosen.ravel()
    order = np.argsort(flat, kind="stable")
    where = np.empty_like(order)
    where[order] = np.arange(len(order))
    counts = np.bincount(flat, minlength=expert_num).astype(np.int32)
    return float_np(x)[order // chosen.shape[1]], where.astype(np.int32), counts, np.zeros(expert_num, np.int32)


def grouped_matmul_v4(init, x, weight, *args, group_list=None, split_item=0, group_type=-1, group_list_type=0, **_):
    """One tensor in and out (split_item 3), its rows in consecutive groups (group_type 0) of group_list's counts
    (group_list_type 1), group g times weight[g] [K, N]: each expert's rows times that expert's weight."""
    import mindspore as ms

    assert (split_item, group_type, group_list_type) == (3, 0, 1) and not any(a is not None for a in args)
    (rows,), (stacked,) = x, weight
    assert rows.dtype == stacked.dtype and group_list.dtype == ms.int64
    counts, values, weights = as_np(group_list), float_np(rows), float_np(stacked)
    assert counts.sum() == len(values) and len(counts) == len(weights)
    starts = np.concatenate([[0], np.cumsum(counts)])
    out = np.zeros((len(values), weights.shape[2]), np.float32)
    for group, (start, end) in enumerate(itertools.pairwise(starts)):
        out[start:end] = values[start:end] @ weights[group]
    return (out,)


def moe_token_unpermute(init, permuted_tokens, sorted_indices, probs=None, padded_mode=False, restore_shape=None):
    """Unpadded: token t's result is the sum over its choices j of probs[t, j] times the row that choice landed on,
    permuted_tokens[sorted_indices[t * k + j]] (CANN's MoeTokenUnpermute gathers by sorted_indices)."""
    assert not padded_mode and restore_shape is None
    weights = float_np(probs)
    rows = float_np(permuted_tokens)[as_np(sorted_indices)].reshape(*weights.shape, -1)
    return (rows * weights[..., None]).sum(axis=1)


def as_bfloat16(values: np.ndarray) -> np.ndarray:
    """float32 values rounded to bfloat16 (the quantized matmuls' output type), as float32."""
    from vms_plugin.kernels.pack import bfloat16_bits, bfloat16_to_float32

    return bfloat16_to_float32(bfloat16_bits(values.astype(np.float32)))


def ms_tensor(array):
    from mindspore import Tensor

    return Tensor(array)


STAND_INS = {
    "rms_norm": rms_norm,
    "add_rms_norm": add_rms_norm,
    "apply_rotary_pos_emb": apply_rotary_pos_emb,
    "reshape_and_cache": reshape_and_cache,
    "paged_attention": paged_attention,
    "flash_attention_score": flash_attention_score,
    "swiglu": swiglu,
    "weight_quant_batch_matmul": weight_quant_batch_matmul,
    "dynamic_quant": dynamic_quant,
    "quant_batch_matmul": quant_batch_matmul,
    "moe_gating_top_k_softmax": moe_gating_top_k_softmax,
    "moe_init_routing_v2": moe_init_routing_v2,
    "grouped_matmul_v4": grouped_matmul_v4,
    "moe_token_unpermute": moe_token_unpermute,
}


class StandIn:
    """Constructed and called like the real primitive class `real`; `compute` gives the documented result."""

    calls: ClassVar[list[str]] = []

    def __init__(self, real, compute) -> None:
        self.real, self.compute = real, compute

    def __call__(self, *args, **kwargs):
        init = inspect.signature(self.real.__init__).bind(None, *args, **kwargs)
        init.apply_defaults()
        return BoundStandIn(self, {k: v for k, v in init.arguments.items() if k != "self"})


class BoundStandIn:
    def __init__(self, stand_in: StandIn, init: dict) -> None:
        self.stand_in, self.init = stand_in, init

    def __call__(self, *args, **kwargs):
        inspect.signature(self.stand_in.real.__call__).bind(None, *args, **kwargs)
        StandIn.calls.append(self.stand_in.real.__name__)
        result = self.stand_in.compute(self.init, *args, **kwargs)
        if isinstance(result, tuple):
            return tuple(None if r is None else ms_tensor(as_result(r)) for r in result)
        return ms_tensor(as_result(result))


def as_result(values) -> np.ndarray:
    """A stand-in's output as the primitive's: integers keep their type (int8 quantized values, int32 indices),
    anything else float32."""
    values = np.asarray(values)
    return values if values.dtype in (np.int8, np.int32) else values.astype(np.float32)


@pytest.fixture
def ascend_stand_ins(monkeypatch):
    from vms_plugin.ops.ascend import AscendOps, Primitives

    real = Primitives.from_mindspore()
    primitives = Primitives(**{name: StandIn(getattr(real, name), STAND_INS[name]) for name in STAND_INS})
    monkeypatch.setattr(ops_module, "build_layer_ops", lambda device: AscendOps(primitives))
    ops_module.layer_ops.cache_clear()
    StandIn.calls.clear()
    yield
    ops_module.layer_ops.cache_clear()


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_models_through_the_ascend_kernels_match_transformers(architecture, tiny_model_dirs, ascend_stand_ins) -> None:
    assert_logits_match_transformers(tiny_model_dirs[architecture])
    used = set(StandIn.calls)
    assert {"ReshapeAndCache", "PagedAttention", "FlashAttentionScore", "ApplyRotaryPosEmb", "Swiglu"} <= used
    assert {"RmsNorm", "AddRmsNorm"} <= used


def test_partial_rotary_turns_only_each_heads_first_features_on_ascend(ascend_stand_ins) -> None:
    """GLM's RoPE on half of each head: ApplyRotaryPosEmb on the heads' first 32 of 64 features, the rest kept."""
    import mindspore as ms
    from mindspore import Tensor

    from vms_plugin.layers.rope_scaling import RopeParameters
    from vms_plugin.layers.rotary import rotary_tables
    from vms_plugin.ops import layer_ops

    rng = np.random.default_rng(4)
    cos, sin = rotary_tables(32, 16, RopeParameters())
    q, k = rng.standard_normal((3, 4 * 64)).astype(np.float32), rng.standard_normal((3, 2 * 64)).astype(np.float32)
    positions = np.array([0, 5, 9], np.int32)
    ops = layer_ops()
    q_out, k_out = ops._rotate(Tensor(q), Tensor(k), ops.rotary(cos, sin), Tensor(positions, ms.int32), (4, 2, 64))
    for ours, x, heads in ((q_out, q, 4), (k_out, k, 2)):
        shaped = x.reshape(3, heads, 64)
        turned = rotate(np.ascontiguousarray(shaped[..., :32]).reshape(3, -1), cos[positions], sin[positions], heads)
        expected = np.concatenate([turned.reshape(3, heads, 32), shaped[..., 32:]], axis=-1).reshape(3, -1)
        np.testing.assert_allclose(ours.asnumpy(), expected, atol=1e-6)


def test_expert_parallel_is_refused_by_name_on_ascend(tiny_deepseek_dirs, ascend_stand_ins) -> None:
    """Not built for the NPU yet: an expert-parallel rank's share of the experts stops with one line (a chip, not
    this machine, must show that composition)."""
    from vms_plugin.models.registry import build_model
    from vms_plugin.ops import layer_ops

    model = build_model(tiny_deepseek_dirs["DeepseekV3ForCausalLM"])
    half = model.model.layers[2].mlp.weights()._replace(num_experts=16)  # an expert-parallel rank's 8 of 16
    with pytest.raises(ValueError, match="does not split experts between ranks yet; drop --enable-expert-parallel"):
        layer_ops().routed_experts(None, half)


@pytest.mark.parametrize("architecture", DEEPSEEK_ARCHITECTURES)
def test_deepseek_through_the_ascend_kernels_matches_transformers(
    architecture, tiny_deepseek_dirs, ascend_stand_ins
) -> None:
    """Latent attention (ops/ascend_latent.py): the latent rows through ReshapeAndCache, prefill through
    FlashAttentionScore on the decompressed context, decode through PagedAttention with mla_v_dim on absorbed
    queries; DeepSeek's routing from basic ops; the experts through the MoE primitives' stand-ins."""
    assert_logits_match_transformers(tiny_deepseek_dirs[architecture])
    used = set(StandIn.calls)
    assert {"ReshapeAndCache", "FlashAttentionScore", "PagedAttention", "ApplyRotaryPosEmb"} <= used
    assert {"MoeInitRoutingV2", "GroupedMatmulV4", "MoeTokenUnpermute"} <= used


def test_glm_moe_through_the_ascend_kernels_matches_transformers(tiny_deepseek_dirs, ascend_stand_ins) -> None:
    """GLM-4.5: partial rotary through ApplyRotaryPosEmb, DeepSeek-V3's routing from MindSpore's basic ops
    (ops/ascend_routing.py, run for real), the experts through the MoE primitives' stand-ins."""
    assert_logits_match_transformers(tiny_deepseek_dirs["Glm4MoeForCausalLM"])
    used = set(StandIn.calls)
    assert {"ApplyRotaryPosEmb", "MoeInitRoutingV2", "GroupedMatmulV4", "MoeTokenUnpermute"} <= used
    assert "MoeGatingTopKSoftmax" not in used


def test_deepseek_routing_on_ascend_matches_transformers_routers() -> None:
    """V3's noaux_tc (sigmoid, bias, groups worth their two best) and V2's group-limited softmax from MindSpore's
    basic ops: the same choices, and weights within float32 rounding, as the numpy port of transformers' routers
    that the CPU kernel is held to (tests/unit/test_routed_experts_kernel.py)."""
    import mindspore as ms
    from mindspore import Tensor

    from vms_plugin.ops.ascend_routing import route
    from vms_plugin.ops.interface import Routing

    rng = np.random.default_rng(8)
    logits = rng.standard_normal((37, 8)).astype(np.float32)
    bias = (0.1 * rng.standard_normal(8)).astype(np.float32)
    cases = [
        (Routing(2, True, sigmoid=True, groups=4, top_groups=2, group_by_top_two=True, scaling=2.5), bias),
        (Routing(2, False, groups=4, top_groups=2, scaling=16.0), None),
    ]
    for routing, correction in cases:
        weights, chosen = route(Tensor(logits), routing, None if correction is None else Tensor(correction))
        expected_weights, expected_chosen = routing_reference(logits, routing, correction)
        ours = sorted_by_expert(weights.asnumpy(), chosen.astype(ms.int64).asnumpy())
        np.testing.assert_array_equal(ours[1], expected_chosen)
        np.testing.assert_allclose(ours[0], expected_weights, rtol=1e-5)


def sorted_by_expert(weights: np.ndarray, chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(chosen, axis=1)
    return np.take_along_axis(weights, order, axis=1), np.take_along_axis(chosen, order, axis=1)


def routing_reference(logits: np.ndarray, routing, bias) -> tuple[np.ndarray, np.ndarray]:
    """(weights, chosen) in expert order, from the numpy port of transformers' routers the CPU kernel's tests use."""
    from test_routed_experts_kernel import choose

    chosen, scores = choose(logits, routing, bias)
    weights = np.take_along_axis(scores, chosen, axis=1)
    if routing.normalize:
        weights = weights / (weights.sum(axis=1, keepdims=True) + 1e-20)
    return sorted_by_expert(weights * routing.scaling, chosen)


@pytest.mark.parametrize("architecture", MOE_ARCHITECTURES)
def test_mixture_of_experts_through_the_ascend_moe_kernels_match_transformers(
    architecture, tiny_moe_dirs, ascend_stand_ins
) -> None:
    assert_logits_match_transformers(tiny_moe_dirs[architecture])
    used = set(StandIn.calls)
    assert {"MoeGatingTopKSoftmax", "MoeInitRoutingV2", "GroupedMatmulV4", "MoeTokenUnpermute"} <= used


# Of the largest |logit|, against transformers on the same int8 values with the same bfloat16 roundings
# (int8_reference's bfloat16_matmuls): what is left is float32 accumulation order, and for W8A8 a per-token
# rounding to int8 that float32 noise can flip at a half step.
INT8_TOLERANCE = {"W8A16": 1e-4, "W8A8": 1e-4}
FLIPPED_ROUNDING_TOLERANCE = 0.03


@pytest.mark.parametrize("lm_head", [False, True], ids=["", "int8-lm_head"])
@pytest.mark.parametrize("name", INT8_TOLERANCE)
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_int8_models_through_the_ascend_quantized_matmuls(
    architecture, name, lm_head, tiny_model_dirs, ascend_stand_ins
):
    """W8A16 through WeightQuantBatchMatmul, W8A8 through DynamicQuantExt and QuantBatchMatmul, each int8 weight
    split back into q^T and its scales out of the one tensor it loads as; with `lm_head` the output projection
    too, and the embedding gathering int8 rows and their float32 scales (tied in the tiny Qwen2)."""
    from int8_reference import int8_reference
    from offline_model import logits_of
    from test_model_int8 import reference_logits, scheme

    prompt = np.random.default_rng(0).integers(0, VOCAB_SIZE, size=21).tolist()
    ours = logits_of(tiny_model_dirs[architecture], "float32", prompt, scheme(name, lm_head))
    reference = int8_reference(tiny_model_dirs[architecture], name, bfloat16_matmuls=True, lm_head=lm_head)
    expected = reference_logits(reference, prompt)
    per_position = np.abs(ours - expected).max(axis=1) / np.abs(expected).max()
    assert np.median(per_position) < INT8_TOLERANCE[name]
    assert per_position.max() < FLIPPED_ROUNDING_TOLERANCE
    used = {"W8A16": {"WeightQuantBatchMatmul"}, "W8A8": {"DynamicQuantExt", "QuantBatchMatmul"}}[name]
    assert used <= set(StandIn.calls)
    assert not {"WeightQuantBatchMatmul", "QuantBatchMatmul"} - used & set(StandIn.calls)


def test_an_int8_ascend_weight_carries_its_channel_scales() -> None:
    from vms_plugin.layers.int8 import quantize_per_channel
    from vms_plugin.ops.ascend import int8_device_weight, int8_scales

    quantized, scales = quantize_per_channel(np.random.default_rng(1).standard_normal((5, 3)).astype(np.float32))
    device_weight = int8_device_weight(quantized, scales)
    assert device_weight.shape == (3 + 4, 5) and device_weight.dtype == np.int8
    np.testing.assert_array_equal(device_weight[:3], quantized.T)
    np.testing.assert_array_equal(int8_scales(device_weight), scales)


def test_a_chunked_prefill_sees_its_cached_prefix(tiny_model_dirs, ascend_stand_ins) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from vms_plugin.models.registry import build_model
    from vms_plugin.worker.batch import ScheduledRequest

    model_dir = tiny_model_dirs["LlamaForCausalLM"]
    ours = build_model(model_dir)
    for attention in ours.attention_layers():
        attention.allocate_kv_cache(8, BLOCK_SIZE)
    prompt = np.random.default_rng(3).integers(0, VOCAB_SIZE, size=29).tolist()
    mindspore_step(ours, [ScheduledRequest(prompt[:18], 0, [5, 2], False)])  # first chunk: 18 tokens
    logits = mindspore_step(ours, [ScheduledRequest(prompt[18:], 18, [5, 2], True)])  # the other 11, prefix cached
    with torch.no_grad():
        expected = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)(torch.tensor([prompt]))
    np.testing.assert_allclose(logits, expected.logits[0, 18:].numpy(), atol=TOLERANCE, rtol=0)


def test_copy_on_write_copies_cache_slots_through_reshape_and_cache(ascend_stand_ins) -> None:
    import mindspore as ms
    from mindspore import Parameter, Tensor

    from vms_plugin.ops import layer_ops

    ops = layer_ops()
    shape = ops.kv_cache_shape(4 * BLOCK_SIZE, BLOCK_SIZE, 2, 8)
    assert shape == (4, BLOCK_SIZE, 2, 8)
    data = [np.random.default_rng(seed).standard_normal(shape).astype(np.float32) for seed in (0, 1)]
    k_cache, v_cache = (Parameter(Tensor(d), name=f"c{i}", requires_grad=False) for i, d in enumerate(data))
    src, dst = np.arange(BLOCK_SIZE, dtype=np.int32), np.arange(2 * BLOCK_SIZE, 3 * BLOCK_SIZE, dtype=np.int32)
    ops.copy_slots(k_cache, v_cache, Tensor(src), Tensor(dst))
    for before, cache in zip(data, (k_cache, v_cache), strict=True):
        expected = before.copy()
        expected[2] = before[0]  # block 0 -> block 2
        np.testing.assert_array_equal(cache.asnumpy(), expected)
    assert ms.float32 == k_cache.dtype


def test_the_implementation_is_chosen_from_the_device_or_the_override() -> None:
    from vms_plugin.ops import device_for_ops

    assert device_for_ops(None, "CPU") == "cpu"
    assert device_for_ops(None, "Ascend") == "ascend"
    assert device_for_ops("ascend", "CPU") == "ascend"
    with pytest.raises(ValueError, match="VMS_OPS='npu': allowed: cpu, ascend"):
        device_for_ops("npu", "CPU")


class StandInDistributed:
    """mindspore.mint.distributed for one rank: each call is bound to the real function's signature, then the
    ranks' tensors meet in memory (test_tensor_parallel.py's group) and the result is written in place, as HCCL's
    collectives write theirs."""

    def __init__(self, rank: int, world_size: int, shared: dict) -> None:
        from mindspore.mint import distributed
        from test_tensor_parallel import InMemoryGroup

        self.real, self.exchange, self.init_calls = distributed, InMemoryGroup(rank, world_size, shared), []

    def _bind(self, name: str, *args, **kwargs) -> inspect.BoundArguments:
        return inspect.signature(getattr(self.real, name)).bind(*args, **kwargs)

    def init_process_group(self, *args, **kwargs) -> None:
        self.init_calls.append(self._bind("init_process_group", *args, **kwargs).arguments)

    def all_reduce(self, *args, **kwargs) -> None:
        tensor = self._bind("all_reduce", *args, **kwargs).arguments["tensor"]
        tensor.assign_value(self.exchange.all_reduce(tensor))

    def all_gather_into_tensor(self, *args, **kwargs) -> None:
        bound = self._bind("all_gather_into_tensor", *args, **kwargs).arguments
        rows = self.exchange._exchange(bound["input_tensor"], lambda parts: np.concatenate(parts, axis=0))
        bound["output_tensor"].assign_value(rows)


def test_two_ascend_ranks_over_hccl_match_one_rank(tmp_path, ascend_stand_ins) -> None:
    """Each rank's model runs through the Ascend kernels' stand-ins, its collectives through HcclGroup over the
    stand-in of mindspore.mint.distributed, initialised as the worker initialises it."""
    from test_tensor_parallel import assert_ranks_match_one_rank
    from tiny_models import save_tiny_model

    from vms_plugin.layers.parallel import HcclGroup
    from vms_plugin.worker.device import hccl_init_method

    init_method = hccl_init_method("10.0.0.1", 29501)
    groups = []

    def hccl_group(rank: int, world_size: int, shared: dict) -> HcclGroup:
        groups.append(HcclGroup(rank, world_size, init_method, StandInDistributed(rank, world_size, shared)))
        return groups[-1]

    model_dir = save_tiny_model("Qwen3ForCausalLM", tmp_path / "model", num_attention_heads=4, num_key_value_heads=2)
    assert_ranks_match_one_rank(model_dir, world_size=2, make_group=hccl_group)
    assert sorted(call["rank"] for group in groups for call in group._distributed.init_calls) == [0, 1]
    for group in groups:
        (call,) = group._distributed.init_calls
        assert (call["backend"], call["init_method"], call["world_size"]) == ("hccl", "tcp://10.0.0.1:29502", 2)


@pytest.mark.parametrize(
    ("environ", "local_rank", "expected"),
    [
        ({}, 1, ("CPU", None)),
        ({"VMS_DEVICE": "cpu"}, 0, ("CPU", None)),
        ({"VMS_DEVICE": "ascend"}, 3, ("Ascend", 3)),
        # The runtime numbers the visible NPUs 0, 1: local rank 1 is NPU 6 of the host.
        ({"VMS_DEVICE": "ascend", "ASCEND_RT_VISIBLE_DEVICES": "4,6"}, 1, ("Ascend", 1)),
    ],
)
def test_each_rank_takes_the_npu_of_its_local_rank(environ, local_rank, expected) -> None:
    from vms_plugin.worker.device import worker_device

    device = worker_device(local_rank, environ)
    assert (device.target, device.device_id) == expected


def test_data_parallel_replicas_on_one_host_take_different_npus() -> None:
    from vms_plugin.worker.device import local_device_index

    # Two replicas of 2 ranks: replica 0 on NPUs 0 and 1, replica 1 on NPUs 2 and 3.
    assert [local_device_index(rank, replica, 2) for replica in (0, 1) for rank in (0, 1)] == [0, 1, 2, 3]
    assert local_device_index(1, None, 2) == 1  # no data parallelism


def ascend_platform():
    """vms' platform as an Ascend host imports it (VMS_DEVICE=ascend): vLLM's device mapping goes through the
    visible NPUs."""
    from vllm.platforms.cpu import CpuPlatform

    from vms_plugin.platform import MindSporePlatform
    from vms_plugin.worker.device import device_control_variable

    variable = device_control_variable({"VMS_DEVICE": "ascend"}, CpuPlatform.device_control_env_var)
    assert variable == "ASCEND_RT_VISIBLE_DEVICES"
    assert device_control_variable({}, CpuPlatform.device_control_env_var) == CpuPlatform.device_control_env_var
    return type("AscendMindSporePlatform", (MindSporePlatform,), {"device_control_env_var": variable})


@pytest.mark.parametrize(
    ("assigned", "visible", "local_rank", "expected"),
    [
        (None, "", 1, 1),  # multiprocessing, one replica: local rank i takes NPU i
        ([2, 3], "", 1, 3),  # data-parallel replica 1 of 2-rank replicas: vLLM assigns it NPUs 2 and 3
        ([6, 7], "4,5,6,7", 0, 2),  # the same under ASCEND_RT_VISIBLE_DEVICES: NPU 6 is the third visible one
        ([2, 3], "3", 1, 0),  # Ray gave this node's ranks NPUs 2 and 3, and shows rank 1 only its own
    ],
)
def test_a_rank_takes_the_npu_vllm_maps_its_local_rank_to(monkeypatch, assigned, visible, local_rank, expected):
    from vllm.platforms import interface

    from vms_plugin.worker.device import worker_device

    monkeypatch.setattr(interface, "_assigned_physical_gpu_ids", assigned)  # what the worker publishes
    monkeypatch.setenv("ASCEND_RT_VISIBLE_DEVICES", visible)
    environ = {"VMS_DEVICE": "ascend", "ASCEND_RT_VISIBLE_DEVICES": visible}
    device = worker_device(local_rank, environ, ascend_platform().logical_device_id_to_visible_device_id)
    assert (device.target, device.device_id) == ("Ascend", expected)


def test_a_rank_vllm_maps_beyond_the_visible_npus_is_refused_naming_them(monkeypatch) -> None:
    from vllm.platforms import interface

    from vms_plugin.worker.device import worker_device

    monkeypatch.setattr(interface, "_assigned_physical_gpu_ids", None)
    monkeypatch.setenv("ASCEND_RT_VISIBLE_DEVICES", "4,6")
    environ = {"VMS_DEVICE": "ascend", "ASCEND_RT_VISIBLE_DEVICES": "4,6"}
    with pytest.raises(ValueError, match="local rank 2 has no NPU: ASCEND_RT_VISIBLE_DEVICES=4,6 shows 2"):
        worker_device(2, environ, ascend_platform().logical_device_id_to_visible_device_id)


def test_a_rank_beyond_the_visible_npus_is_refused_naming_them() -> None:
    from vms_plugin.worker.device import worker_device

    with pytest.raises(ValueError, match="local rank 2 has no NPU: ASCEND_RT_VISIBLE_DEVICES=4,6 shows 2"):
        worker_device(2, {"VMS_DEVICE": "ascend", "ASCEND_RT_VISIBLE_DEVICES": "4,6"})
