"""The fused C++ kernels against numpy references, on shapes where a wrong index would show.

The models' logits tests (test_model_logits.py, test_model_precision.py) cover the kernels end to end against
transformers; these pin down the pieces a model test can miss: grouped-query heads reading scattered blocks,
unwritten padding slots, copy-on-write of cache slots, every storage type (float32, float16, bfloat16) of
weights and caches, int8 weights with float (W8A16) and int8 (W8A8) activations, the decoder stack's address
table, the AVX2 and SSE builds on an AVX-512 host, the aarch64 builds under qemu, and the error when no compiler
is there.
The numpy references use the same rounded 16-bit values and the same int8 values, so only float32 accumulation
order differs.
"""

from pathlib import Path

import numpy as np
import pytest
from arm64.emulated import ARM_BUILDS, EmulatedKernel
from arm64.emulated import library_answer as arm_answer

HEADS, KV_HEADS, DIM, SLOTS = 6, 2, 16, 64
STORAGE_TYPES = ("float32", "float16", "bfloat16")
# The instruction sets each test runs on: this host's (-march=native); AVX2 without AVX-512 (and so without
# AVX512-BF16 and AVX512-VNNI), the fallback most x86 servers without AVX-512 run (on an AVX2-only host native is
# AVX2 too); and SSE only, whose 4-lane vectors are the generic width of a CPU without AVX (kLanes in the kernels).
X86_BUILDS = {"native": (), "avx2": ("-mno-avx512f",), "sse": ("-mno-avx",)}
# And the aarch64 builds (NEON's 4-lane vectors; Kunpeng 920's fp16 and int8 dot product; Armv8.6's bf16), cross-
# compiled and run under qemu (tests/arm64/emulated.py).
BUILDS = [*X86_BUILDS, *ARM_BUILDS]
# For the long matrices of code the aarch64 targets share (attention; experts, whose products the linear tests cover on
# each target): one aarch64 build, Kunpeng 920's, to keep emulation's time in `make test` down.
BUILDS_ONE_ARM = [*X86_BUILDS, "aarch64-kunpeng920"]
DOT_MIN_ROWS = 16  # kDotMinRows in cpu_kernels.cc


def kernel(name: str, build: str):
    from vms_plugin.kernels.build import build_library
    from vms_plugin.kernels.cpu import kernel_operator

    if build in ARM_BUILDS:
        return EmulatedKernel(name, build)
    return kernel_operator(name, build_library(extra_flags=X86_BUILDS[build]))


def library_answer(build: str, function: str) -> str:
    """What the build's informational function `function` answers (on its own CPU, emulated for aarch64)."""
    import ctypes

    from vms_plugin.kernels.build import build_library

    if build in ARM_BUILDS:
        return arm_answer(build, function)
    answer = getattr(ctypes.CDLL(str(build_library(extra_flags=X86_BUILDS[build]))), function)
    answer.restype = ctypes.c_char_p if function == "Int8DotProducts" else ctypes.c_int
    result = answer()
    return result.decode() if isinstance(result, bytes) else str(result)


def stored(values: np.ndarray, dtype: str):
    """(values rounded to `dtype`, as float32 numpy; the same values as a MindSpore tensor of `dtype`)."""
    import mindspore as ms
    from mindspore import Tensor

    from vms_plugin.kernels.pack import bfloat16_bits, bfloat16_to_float32

    if dtype == "bfloat16":
        bits = bfloat16_bits(values)
        return bfloat16_to_float32(bits), Tensor(bits).view(ms.bfloat16)
    if dtype == "float16":
        return values.astype(np.float16).astype(np.float32), Tensor(values.astype(np.float16))
    return values, Tensor(values)


def as_numpy(tensor) -> np.ndarray:
    import mindspore as ms

    return tensor.astype(ms.float32).asnumpy()


def key_tiles(keys: np.ndarray) -> np.ndarray:
    """Keys [K, S, D], a row per slot, in the K cache's layout: tiles of 16 slots, each transposed [D, 16]."""
    from vms_plugin.ops.cpu import KEY_TILE_ROWS

    heads, slots, dim = keys.shape
    tiles = keys.reshape(heads, slots // KEY_TILE_ROWS, KEY_TILE_ROWS, dim).transpose(0, 1, 3, 2)
    return np.ascontiguousarray(tiles).reshape(heads, slots, dim)


def keys_of(tiles: np.ndarray) -> np.ndarray:
    """The inverse of key_tiles: a K cache's keys, a row per slot."""
    from vms_plugin.ops.cpu import KEY_TILE_ROWS

    heads, slots, dim = tiles.shape
    keys = tiles.reshape(heads, slots // KEY_TILE_ROWS, dim, KEY_TILE_ROWS).transpose(0, 1, 3, 2)
    return np.ascontiguousarray(keys).reshape(heads, slots, dim)


def caches(rng, dtype: str = "float32", dim: int = DIM, slots: int = SLOTS):
    """Random K and V (a row per slot) as numpy arrays, and the cache Parameters (of `dtype`, in the caches'
    layouts) that the kernels update in place."""
    from mindspore import Parameter

    k, v = (rng.standard_normal((KV_HEADS, slots, dim)).astype(np.float32) for _ in range(2))
    k_cache, v_cache = stored(key_tiles(k), dtype)[1], stored(v, dtype)[1]
    return (
        stored(k, dtype)[0],
        stored(v, dtype)[0],
        Parameter(k_cache, name="k", requires_grad=False),
        Parameter(v_cache, name="v", requires_grad=False),
    )


def context_slots_in_blocks(rng, block_size: int, blocks_per_request: int = 3, requests: int = 2) -> np.ndarray:
    """[requests, blocks_per_request * block_size] cache slots: whole blocks of the 128-slot cache in a random
    order, each block's slots in order (as vLLM's block tables give them); block_size 1 scatters every slot."""
    blocks = rng.permutation(128 // block_size)[: requests * blocks_per_request]
    slots = blocks[:, None] * block_size + np.arange(block_size)
    return slots.reshape(requests, -1).astype(np.int32)


@pytest.mark.parametrize("build", BUILDS_ONE_ARM)
@pytest.mark.parametrize("dtype", STORAGE_TYPES)
@pytest.mark.parametrize(("dim", "scale"), [(16, 0.3), (24, 0.3), (64, 3.0)], ids=["dim16", "dim24", "dim64-peaked"])
@pytest.mark.parametrize("block_size", [1, 8, 16, 32], ids=lambda size: f"blocks-of-{size}")
def test_paged_attention_matches_numpy_over_scattered_blocks_with_grouped_heads(
    dtype: str, build: str, dim: int, scale: float, block_size: int
) -> None:
    """Contexts of 1 to 40 slots (keys are read 16 slots at a time: whole and partial tiles, in place when a
    block holds whole tiles, gathered otherwise), a head size that is not a multiple of 16 (24), and a scale whose
    scores span ~100 so that most exponentials underflow."""
    import mindspore as ms
    from mindspore import Tensor

    rng = np.random.default_rng(0)
    k, v, k_cache, v_cache = caches(rng, dtype, dim, slots=128)
    context_slots = context_slots_in_blocks(rng, block_size, blocks_per_request=-(-48 // block_size))
    positions = np.array([39, 0, 16, 33], dtype=np.int32)  # request 0 decodes at 39; request 1 prefills 0, 16, 33
    token_requests = np.array([0, 1, 1, 1], dtype=np.int32)
    q = rng.standard_normal((4, HEADS, dim)).astype(np.float32)

    out = kernel("PagedAttention", build)(
        Tensor(q),
        k_cache,
        v_cache,
        Tensor(positions),
        Tensor(token_requests),
        Tensor(context_slots),
        Tensor([scale], ms.float32),
    ).asnumpy()

    expected = np.zeros((4, HEADS, dim))  # float64: float32 sums in numpy's order differ from exact by ~1e-5 here
    for t, (position, request) in enumerate(zip(positions, token_requests, strict=True)):
        slots = context_slots[request, : position + 1]
        for h in range(HEADS):
            kv_head = h // (HEADS // KV_HEADS)
            scores = k[kv_head, slots].astype(np.float64) @ q[t, h] * scale
            probs = np.exp(scores - scores.max())
            expected[t, h] = probs / probs.sum() @ v[kv_head, slots]
    np.testing.assert_allclose(out, expected.reshape(4, HEADS * dim), atol=1e-5)


@pytest.mark.parametrize("dtype", STORAGE_TYPES)
def test_rope_and_cache_writes_rotated_keys_and_values_and_skips_negative_slots(dtype: str) -> None:
    import mindspore as ms
    from mindspore import Tensor

    from vms_plugin.kernels.cpu import rope_and_cache

    rng = np.random.default_rng(1)
    k, v, k_cache, v_cache = caches(rng, dtype)
    qkv = rng.standard_normal((2, (HEADS + 2 * KV_HEADS) * DIM)).astype(np.float32)
    angles = rng.uniform(0, 6, size=(8, DIM)).astype(np.float32)
    cos, sin = np.cos(angles), np.sin(angles)
    positions, slots = np.array([3, 7], dtype=np.int32), np.array([12, -1], dtype=np.int32)

    no_qk_norm = (Tensor(np.ones(DIM, np.float32)), Tensor(np.ones(DIM, np.float32)), Tensor([0.0], ms.float32))
    q = rope_and_cache(
        Tensor(qkv), Tensor(cos), Tensor(sin), Tensor(positions), Tensor(slots), k_cache, v_cache, no_qk_norm
    )

    def rotate(x, position):
        half = DIM // 2
        return x * cos[position] + np.concatenate([-x[..., half:], x[..., :half]], axis=-1) * sin[position]

    heads = qkv.reshape(2, HEADS + 2 * KV_HEADS, DIM)
    np.testing.assert_allclose(q.asnumpy(), rotate(heads[:, :HEADS], positions[:, None]), atol=1e-5)
    expected_k, expected_v = k.copy(), v.copy()
    expected_k[:, 12] = stored(rotate(heads[0, HEADS : HEADS + KV_HEADS], 3).astype(np.float32), dtype)[0]
    expected_v[:, 12] = stored(heads[0, HEADS + KV_HEADS :], dtype)[0]
    # rounding to 16 bits may go the other way for a key whose float32 rotation differs in the last bit
    rounding = {"float32": 1e-5, "float16": 2e-3, "bfloat16": 2e-2}[dtype]
    np.testing.assert_allclose(keys_of(as_numpy(k_cache)), expected_k, atol=rounding)  # slot -1: nothing else
    np.testing.assert_array_equal(as_numpy(v_cache), expected_v)


def packed(weight: np.ndarray, dtype: str):
    """(W rounded to `dtype` as float32 numpy, its packed Parameter) as the loader makes it."""
    from mindspore import Parameter

    from vms_plugin.ops.cpu import CpuOps

    return stored(weight, dtype)[0], Parameter(CpuOps().linear_weight(weight, dtype), name="w")


def uses_bf16_dot_products(build: str) -> bool:
    return library_answer(build, "UsesBf16DotProducts") == "1"


def int8_dot_products(build: str) -> str:
    return library_answer(build, "Int8DotProducts")


def uses_vnni(build: str) -> bool:
    return int8_dot_products(build) == "vpdpbusd"


def cpu_flags() -> list[str]:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    return next(line for line in cpuinfo if line.startswith("flags")).split()


def test_the_native_build_uses_avx512_bf16_and_vnni_dot_products_where_the_cpu_has_them() -> None:
    assert uses_bf16_dot_products("native") == ("avx512_bf16" in cpu_flags())
    assert uses_vnni("native") == ("avx512_vnni" in cpu_flags())
    assert not uses_bf16_dot_products("avx2")


def test_each_build_multiplies_int8_activations_with_the_widest_integer_dot_product_it_has() -> None:
    """VNNI where the CPU has it, AVX2's vpmaddubsw in the AVX2 build (and natively on AVX2-only CPUs), widening
    without AVX."""
    flags = cpu_flags()
    native = "vpdpbusd" if "avx512_vnni" in flags else "widened" if "avx512f" in flags else "vpmaddubsw"
    assert int8_dot_products("native") == (native if "avx2" in flags else "widened")
    assert int8_dot_products("avx2") == ("vpmaddubsw" if "avx2" in flags else "widened")
    assert int8_dot_products("sse") == "widened"


def test_the_aarch64_builds_use_the_dot_products_their_cpu_has() -> None:
    """sdot from Armv8.2's dot product extension on (Kunpeng 920 has it), widening on Armv8.0; bfloat16's BFDOT on
    Armv8.6 (Kunpeng 920 has none: its bfloat16 goes through float32)."""
    assert int8_dot_products("aarch64-armv8") == "widened"
    assert int8_dot_products("aarch64-kunpeng920") == "sdot"
    assert int8_dot_products("aarch64-armv8.6") == "sdot"
    assert [build for build in ARM_BUILDS if uses_bf16_dot_products(build)] == ["aarch64-armv8.6"]


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("dtype", STORAGE_TYPES)
@pytest.mark.parametrize("rows", [1, 3, 6, 9, 13, 16, 20, 23])
def test_linear_on_packed_weights_matches_numpy_with_a_partial_last_panel(rows, dtype: str, build: str) -> None:
    """70 outputs: one full 64-column panel and a zero-padded one; 33 inputs, odd, so bfloat16's pair layout ends
    on a half pair; the row counts cover whole tiles (6 rows on AVX-512, 2 on AVX2, 3 on NEON) and a last tile of
    every size (1-5 rows), below and above DOT_MIN_ROWS, from which a bfloat16 layer on AVX512-BF16 rounds its
    activations to bfloat16 too."""
    from mindspore import Tensor

    rng = np.random.default_rng(3)
    weight, parameter = packed(rng.standard_normal((70, 33)).astype(np.float32), dtype)
    bias = rng.standard_normal(70).astype(np.float32)
    x = rng.standard_normal((rows, 33)).astype(np.float32)

    out = kernel("Linear", build)(Tensor(x), parameter, Tensor(bias), Tensor(np.zeros(1, np.float32))).asnumpy()

    dot_products = dtype == "bfloat16" and rows >= DOT_MIN_ROWS and uses_bf16_dot_products(build)
    activations = stored(x, "bfloat16")[0] if dot_products else x
    assert out.shape == (rows, 70)
    np.testing.assert_allclose(out, activations @ weight.T + bias, atol=1e-4)


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("dtype", STORAGE_TYPES)
def test_a_product_split_by_rows_between_threads_matches_numpy(dtype: str, build: str) -> None:
    """3 panels (150 outputs, the last partial) do not divide between 2 threads, so 41 rows are split into blocks
    of 21 and 20 rows, each computed against each panel by one thread (rows are rounded to bfloat16 by every
    thread first): every block lands in its own rows, the partial panel's too. On a host of one core the product
    is not split, and this is the plain product."""
    from mindspore import Tensor

    rng = np.random.default_rng(8)
    weight, parameter = packed(rng.standard_normal((150, 40)).astype(np.float32), dtype)
    bias = rng.standard_normal(150).astype(np.float32)
    x = rng.standard_normal((41, 40)).astype(np.float32)

    out = kernel("Linear", build)(Tensor(x), parameter, Tensor(bias), Tensor(np.zeros(1, np.float32))).asnumpy()

    activations = stored(x, "bfloat16")[0] if dtype == "bfloat16" and uses_bf16_dot_products(build) else x
    np.testing.assert_allclose(out, activations @ weight.T + bias, atol=1e-4)


INT8_LEVELS = 127  # W8A8's activations
MANTISSA_LEVELS = 2**23 - 1  # W8A16 decode rows on VNNI: a 24-bit mantissa per row
MANTISSA_MAX_ROWS = 2  # kMantissaMaxRows in cpu_kernels.cc


def quantized_rows(x: np.ndarray, levels: int = INT8_LEVELS) -> tuple[np.ndarray, np.ndarray]:
    """The kernel's integer activations: per row, scale = max|x| / levels (1 for a zero row), xq = round(x / scale)."""
    max_abs = np.abs(x).max(axis=1)
    scales = np.where(max_abs > 0, max_abs / np.float32(levels), np.float32(1)).astype(np.float32)
    return np.clip(np.rint(x / scales[:, None]), -levels, levels).astype(np.int64), scales


def integer_activation_product(x, quantized, scales, bias, levels: int) -> np.ndarray:
    x_quantized, x_scales = quantized_rows(x, levels)
    products = (x_quantized @ quantized.astype(np.int64).T).astype(np.float64)
    return products * x_scales[:, None] * scales[None, :] + bias


def int8_parameter(weight: np.ndarray):
    from mindspore import Parameter

    from vms_plugin.layers.int8 import quantize_per_channel
    from vms_plugin.ops.cpu import CpuOps

    quantized, scales = quantize_per_channel(weight)
    return quantized, scales, Parameter(CpuOps().linear_weight(quantized, "int8", scales), name="w")


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("int8_activations", [False, True], ids=["W8A16", "W8A8"])
@pytest.mark.parametrize("rows", [1, 2, 3, 6, 9, 13, 16, 20, 23])
def test_int8_linear_matches_numpy_with_float_or_int8_activations(rows, int8_activations: bool, build: str) -> None:
    """70 outputs (a partial panel), 35 inputs (not a multiple of the four k per 32-bit lane), a zero row. W8A8
    products are integers, exact in both the VNNI and the widening build, so only the scaling's rounding differs;
    W8A16's 24-bit row mantissa (decode rows on VNNI) is within float32's rounding of the float product here."""
    from mindspore import Tensor

    rng = np.random.default_rng(5)
    quantized, scales, parameter = int8_parameter(rng.standard_normal((70, 35)).astype(np.float32))
    bias = rng.standard_normal(70).astype(np.float32)
    x = rng.standard_normal((rows, 35)).astype(np.float32)
    x[rows // 2] = 0.0

    options = Tensor(np.array([float(int8_activations)], np.float32))
    out = kernel("Linear", build)(Tensor(x), parameter, Tensor(bias), options).asnumpy()

    if int8_activations:
        expected = integer_activation_product(x, quantized, scales, bias, INT8_LEVELS)
    else:
        expected = x @ (quantized.astype(np.float32) * scales[:, None]).T + bias
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("build", BUILDS)
def test_an_int8_product_split_by_rows_between_threads_matches_numpy(build: str) -> None:
    """W8A8 as above, split into row blocks (3 panels, 41 rows): each thread quantizes its share of the rows before
    any block is multiplied."""
    from mindspore import Tensor

    rng = np.random.default_rng(9)
    quantized, scales, parameter = int8_parameter(rng.standard_normal((150, 44)).astype(np.float32))
    bias = rng.standard_normal(150).astype(np.float32)
    x = rng.standard_normal((41, 44)).astype(np.float32)

    out = kernel("Linear", build)(Tensor(x), parameter, Tensor(bias), Tensor(np.ones(1, np.float32))).asnumpy()

    expected = integer_activation_product(x, quantized, scales, bias, INT8_LEVELS)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("build", BUILDS)
def test_int8_w8a8_products_at_full_scale_do_not_saturate(build: str) -> None:
    """Every activation and weight at +-127 (each row and column all one magnitude), signs agreeing in every pair:
    the largest 16-bit pair sums AVX2's vpmaddubsw can meet (2 x 127 x 127), exact in the result."""
    from mindspore import Tensor

    rng = np.random.default_rng(7)
    signs = np.where(rng.random(64) < 0.5, -1.0, 1.0).astype(np.float32)
    weight = np.tile(signs, (70, 1)) * np.arange(1, 71, dtype=np.float32)[:, None]
    quantized, scales, parameter = int8_parameter(weight)
    assert np.abs(quantized).min() == INT8_LEVELS
    x = np.stack([signs * 3.0, -signs * 0.5, signs * np.float32(1e-3)])
    bias = np.zeros(70, np.float32)

    out = kernel("Linear", build)(Tensor(x), parameter, Tensor(bias), Tensor(np.ones(1, np.float32))).asnumpy()

    expected = integer_activation_product(x, quantized, scales, bias, INT8_LEVELS)
    assert np.abs(expected).max() > 0
    np.testing.assert_allclose(out, expected, rtol=1e-6)


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("rows", [1, 2, 3])
def test_int8_w8a16_decode_rows_share_a_24_bit_mantissa_on_vnni(rows: int, build: str) -> None:
    """Which activations a W8A16 layer multiplies, made visible: each row holds an outlier of 2^21 on an input
    whose weights are zero, so a 24-bit mantissa per row rounds the other inputs (~1) to multiples of 0.25 while
    float32 keeps them. Rows up to MANTISSA_MAX_ROWS on a VNNI build take the mantissa; others float32."""
    from mindspore import Tensor

    rng = np.random.default_rng(6)
    weight = rng.standard_normal((70, 36)).astype(np.float32)
    weight[:, 0] = 0.0
    quantized, scales, parameter = int8_parameter(weight)
    bias = rng.standard_normal(70).astype(np.float32)
    x = rng.standard_normal((rows, 36)).astype(np.float32)
    x[:, 0] = 2.0**21

    out = kernel("Linear", build)(Tensor(x), parameter, Tensor(bias), Tensor(np.zeros(1, np.float32))).asnumpy()

    float_product = x.astype(np.float64) @ (quantized.astype(np.float64) * scales[:, None]).T + bias
    mantissa_product = integer_activation_product(x, quantized, scales, bias, MANTISSA_LEVELS)
    assert np.abs(float_product - mantissa_product).max() > 0.1  # the two are told apart
    uses_mantissa = uses_vnni(build) and rows <= MANTISSA_MAX_ROWS
    np.testing.assert_allclose(out, mantissa_product if uses_mantissa else float_product, rtol=0, atol=1e-3)


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("dtype", STORAGE_TYPES)
def test_embedding_rows_are_read_back_out_of_the_packed_output_projection(dtype: str, build: str) -> None:
    """The table W [vocab, hidden] is stored once, packed for the output projection; a lookup returns W[ids]."""
    from mindspore import Tensor

    rng = np.random.default_rng(4)
    weight, parameter = packed(rng.standard_normal((130, 33)).astype(np.float32), dtype)
    ids = np.array([0, 129, 64, 63, 7, 7], dtype=np.int32)

    rows = kernel("PackedRows", build)(Tensor(ids), parameter, Tensor(np.zeros(33, np.float32))).asnumpy()

    np.testing.assert_array_equal(rows, weight[ids])


@pytest.mark.parametrize("build", BUILDS)
def test_embedding_rows_of_an_int8_table_are_dequantized_with_their_row_scale(build: str) -> None:
    """An int8 output projection (`quantize_lm_head`) is also the embedding: a lookup returns scale[id] * q[id]."""
    from mindspore import Tensor

    rng = np.random.default_rng(8)
    quantized, scales, parameter = int8_parameter(rng.standard_normal((130, 35)).astype(np.float32))
    ids = np.array([0, 129, 64, 63, 7, 7, 130, -1], dtype=np.int32)

    rows = kernel("PackedRows", build)(Tensor(ids), parameter, Tensor(np.zeros(35, np.float32))).asnumpy()

    expected = quantized[ids[:6]].astype(np.float32) * scales[ids[:6], None]
    np.testing.assert_array_equal(rows[:6], expected)
    np.testing.assert_array_equal(rows[6:], 0.0)  # outside the table: another rank's tokens


@pytest.mark.parametrize("dtype", STORAGE_TYPES)
def test_copy_slots_copies_every_kv_head_in_place(dtype: str) -> None:
    from mindspore import Tensor

    from vms_plugin.kernels.cpu import copy_slots

    k, v, k_cache, v_cache = caches(np.random.default_rng(2), dtype)
    copy_slots(k_cache, v_cache, Tensor(np.array([4, 5], dtype=np.int32)), Tensor(np.array([30, 31], dtype=np.int32)))
    for before, after in ((k, keys_of(as_numpy(k_cache))), (v, as_numpy(v_cache))):
        expected = before.copy()
        expected[:, [30, 31]] = before[:, [4, 5]]
        np.testing.assert_array_equal(after, expected)


def test_a_machine_without_a_compiler_gets_one_clear_error(tmp_path, monkeypatch) -> None:
    from vms_plugin.kernels import build

    monkeypatch.setenv(build.CACHE_ENV, str(tmp_path))
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(build.shutil, "which", lambda _: None)
    build.build_library.cache_clear()
    try:
        with pytest.raises(build.KernelBuildError, match="needs a C\\+\\+ compiler: install g\\+\\+"):
            build.build_library()
        assert list(tmp_path.iterdir()) == []
    finally:
        build.build_library.cache_clear()


def random_layer(rng, dtype: str, hidden: int, intermediate: int, k_cache, v_cache, raw: dict | None = None):
    """A decoder layer's DecoderWeights with random weights (stored as `dtype`), norms, biases and q/k norms; `raw`
    receives the four linear weights as float32 [out, in] arrays in the order made (qkv, o, gate_up, down)."""
    from mindspore import Parameter, Tensor

    from vms_plugin.layers.int8 import quantize_per_channel
    from vms_plugin.ops.cpu import CpuOps
    from vms_plugin.ops.interface import DecoderWeights

    def weight(out_features: int, in_features: int) -> Parameter:
        w = (rng.standard_normal((out_features, in_features)) / np.sqrt(in_features)).astype(np.float32)
        if raw is not None:
            raw[("qkv", "o", "gate_up", "down")[len(raw)]] = w
        if dtype == "int8":
            quantized, scales = quantize_per_channel(w)
            return Parameter(CpuOps().linear_weight(quantized, "int8", scales), name="w", requires_grad=False)
        return Parameter(CpuOps().linear_weight(w, dtype), name="w", requires_grad=False)

    def vector(size: int) -> Tensor:
        return Tensor((1 + 0.1 * rng.standard_normal(size)).astype(np.float32))

    qkv_width = (HEADS + 2 * KV_HEADS) * DIM
    return DecoderWeights(
        input_norm=vector(hidden),
        qkv=weight(qkv_width, hidden),
        qkv_bias=vector(qkv_width),
        q_norm=vector(DIM),
        k_norm=vector(DIM),
        o=weight(hidden, HEADS * DIM),
        o_bias=vector(hidden),
        post_norm=vector(hidden),
        gate_up=weight(2 * intermediate, hidden),
        down=weight(hidden, intermediate),
        k_cache=k_cache,
        v_cache=v_cache,
        heads=(HEADS, KV_HEADS, DIM),
        intermediate_size=intermediate,
        eps=1e-5,
        scale=DIM**-0.5,
        int8_activations=False,
        prepared={},
    )


def packed_table(rng, dtype: str, rows: int, width: int):
    """A random [rows, width] table packed as a linear weight stored as `dtype` (int8: quantized per row)."""
    from mindspore import Parameter

    from vms_plugin.layers.int8 import quantize_per_channel
    from vms_plugin.ops.cpu import CpuOps

    table = (rng.standard_normal((rows, width)) / np.sqrt(width)).astype(np.float32)
    if dtype == "int8":
        quantized, scales = quantize_per_channel(table)
        return Parameter(CpuOps().linear_weight(quantized, "int8", scales), name="t", requires_grad=False)
    return Parameter(CpuOps().linear_weight(table, dtype), name="t", requires_grad=False)


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int8"])
def test_a_causal_lm_launch_equals_its_parts_launched_one_by_one(dtype: str, build: str) -> None:
    """CausalLm reads each layer's weights and caches through its address table: over three layers with different
    weights, a prefill chunk and a decode beside it, its logits and caches equal those of the embedding lookup,
    each layer launched on its own (DecoderLayer's two halves, the tensor-parallel path with nothing to
    all-reduce), the final norm and the output projection of the sampled rows. The embedding and the output
    projection have storage types of their own (an untied head, or the int8 head of quantize_lm_head)."""
    from mindspore import Parameter, Tensor

    from vms_plugin.attention.paged import attention_inputs
    from vms_plugin.ops.cpu import LayerPart, adapter_table, causal_lm_inputs, layer_constants
    from vms_plugin.ops.interface import DecoderStack, ModelEnds
    from vms_plugin.worker.batch import ScheduledRequest, build_step_batch

    rng = np.random.default_rng(7)
    hidden, intermediate, positions, vocab = 96, 80, 32, 100  # a vocabulary ending in a partial panel
    cache_dtype = "bfloat16" if dtype == "int8" else dtype
    stacked, one_by_one = [], []
    for _ in range(3):
        _, _, k_cache, v_cache = caches(rng, cache_dtype)
        layer = random_layer(rng, dtype, hidden, intermediate, k_cache, v_cache)
        stacked.append(layer)
        same_caches = {"k_cache": Parameter(k_cache.copy(), name="k"), "v_cache": Parameter(v_cache.copy(), name="v")}
        one_by_one.append(layer._replace(**same_caches))
    batch = build_step_batch(
        [ScheduledRequest(list(range(5)), 0, [2], True), ScheduledRequest([7], 9, [0], True)], block_size=16
    )
    indices = attention_inputs(batch).indices
    rotary = Tensor(rng.uniform(-1, 1, (2, positions, DIM)).astype(np.float32))
    ids = Tensor(rng.integers(0, vocab, len(batch.input_ids)).astype(np.int32))
    logits_index = Tensor(np.array([4, 5], dtype=np.int32))  # each request's last token
    ends = ModelEnds(
        embedding=packed_table(rng, dtype, vocab, hidden),
        final_norm=Tensor((1 + 0.1 * rng.standard_normal(hidden)).astype(np.float32)),
        eps=1e-6,
        head=packed_table(rng, "float32" if dtype == "bfloat16" else "bfloat16", vocab, hidden),
        vocab=vocab,
        int8_activations=False,
    )
    zeros = Tensor(np.zeros(vocab, np.float32))

    stack = DecoderStack(tuple(stacked), {})
    logits = kernel("CausalLm", build)(*causal_lm_inputs(stack, ends, ids, rotary, indices, logits_index, zeros))

    layer_kernel = kernel("DecoderLayer", build)
    h, stream = kernel("PackedRows", build)(ids, ends.embedding, ends.final_norm), None
    for w in one_by_one:
        weights = (w.qkv, w.o, w.gate_up, w.down, rotary, indices, w.k_cache, w.v_cache, Tensor(adapter_table([w])))
        attention_constants = Tensor(layer_constants(w, stream is not None, LayerPart.ATTENTION))
        attention, stream = layer_kernel(h, h if stream is None else stream, attention_constants, *weights)
        mlp_constants = Tensor(layer_constants(w, True, LayerPart.MLP))
        h, stream = layer_kernel(attention, stream, mlp_constants, *weights)
    eps = Tensor(np.array([ends.eps], np.float32))
    normed, _ = kernel("AddRmsNorm", build)(h[logits_index], stream[logits_index], ends.final_norm, eps)
    expected = kernel("Linear", build)(normed, ends.head, zeros, Tensor(np.zeros(1, np.float32)))

    assert logits.shape == (2, vocab)
    np.testing.assert_array_equal(logits.asnumpy(), expected.asnumpy())
    for a, b in zip(stacked, one_by_one, strict=True):
        np.testing.assert_array_equal(as_numpy(a.k_cache), as_numpy(b.k_cache))
        np.testing.assert_array_equal(as_numpy(a.v_cache), as_numpy(b.v_cache))
