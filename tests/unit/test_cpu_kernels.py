"""The fused C++ kernels against numpy references, on shapes where a wrong index would show.

The models' logits tests (test_model_logits.py) cover the kernels end to end against transformers; these pin
down the pieces a model test can miss: grouped-query heads reading scattered blocks, unwritten padding slots,
copy-on-write of cache slots, and the error when no compiler is there.
"""

import numpy as np
import pytest

HEADS, KV_HEADS, DIM, SLOTS = 6, 2, 16, 64


def caches(rng):
    """Random K and V as numpy arrays and as the cache Parameters the kernels update in place."""
    from mindspore import Parameter, Tensor

    k, v = (rng.standard_normal((KV_HEADS, SLOTS, DIM)).astype(np.float32) for _ in range(2))
    return k, v, *(Parameter(Tensor(x), name=name, requires_grad=False) for x, name in ((k, "k"), (v, "v")))


def test_paged_attention_matches_numpy_over_scattered_blocks_with_grouped_heads() -> None:
    import mindspore as ms
    from mindspore import Tensor

    from vms_plugin.kernels.cpu import paged_attention

    rng = np.random.default_rng(0)
    k, v, k_cache, v_cache = caches(rng)
    context_slots = np.array([[40, 41, 42, 43, 8, 9, 10, 11], [20, 21, 22, 23, 0, 1, 2, 3]], dtype=np.int32)
    positions = np.array([5, 1, 2, 3], dtype=np.int32)  # request 0 decodes at 5; request 1 prefills 1..3
    token_requests = np.array([0, 1, 1, 1], dtype=np.int32)
    q = rng.standard_normal((4, HEADS, DIM)).astype(np.float32)
    scale = 0.3

    out = paged_attention(
        Tensor(q),
        k_cache,
        v_cache,
        Tensor(positions),
        Tensor(token_requests),
        Tensor(context_slots),
        Tensor([scale], ms.float32),
    ).asnumpy()

    expected = np.zeros((4, HEADS, DIM), dtype=np.float32)
    for t, (position, request) in enumerate(zip(positions, token_requests, strict=True)):
        slots = context_slots[request, : position + 1]
        for h in range(HEADS):
            kv_head = h // (HEADS // KV_HEADS)
            scores = k[kv_head, slots] @ q[t, h] * scale
            probs = np.exp(scores - scores.max())
            expected[t, h] = probs / probs.sum() @ v[kv_head, slots]
    np.testing.assert_allclose(out, expected.reshape(4, HEADS * DIM), atol=1e-5)


def test_rope_and_cache_writes_rotated_keys_and_values_and_skips_negative_slots() -> None:
    import mindspore as ms
    from mindspore import Tensor

    from vms_plugin.kernels.cpu import rope_and_cache

    rng = np.random.default_rng(1)
    k, v, k_cache, v_cache = caches(rng)
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
    expected_k[:, 12] = rotate(heads[0, HEADS : HEADS + KV_HEADS], 3)
    expected_v[:, 12] = heads[0, HEADS + KV_HEADS :]
    np.testing.assert_allclose(k_cache.asnumpy(), expected_k, atol=1e-5)  # slot -1: nothing else written
    np.testing.assert_array_equal(v_cache.asnumpy(), expected_v)


@pytest.mark.parametrize("rows", [1, 3, 6, 9, 13])
def test_linear_on_packed_weights_matches_numpy_with_a_partial_last_panel(rows) -> None:
    """70 outputs: one full 64-column panel and a zero-padded one; the row counts cover whole tiles (6 rows on
    AVX-512) and every remainder path."""
    from mindspore import Parameter, Tensor

    from vms_plugin.kernels.cpu import linear
    from vms_plugin.kernels.pack import pack_linear_weight

    rng = np.random.default_rng(3)
    weight = rng.standard_normal((70, 33)).astype(np.float32)
    bias = rng.standard_normal(70).astype(np.float32)
    x = rng.standard_normal((rows, 33)).astype(np.float32)

    out = linear(Tensor(x), Parameter(Tensor(pack_linear_weight(weight)), name="w"), Tensor(bias)).asnumpy()

    assert out.shape == (rows, 70)
    np.testing.assert_allclose(out, x @ weight.T + bias, atol=1e-4)


def test_copy_slots_copies_every_kv_head_in_place() -> None:
    from mindspore import Tensor

    from vms_plugin.kernels.cpu import copy_slots

    k, v, k_cache, v_cache = caches(np.random.default_rng(2))
    copy_slots(k_cache, v_cache, Tensor(np.array([4, 5], dtype=np.int32)), Tensor(np.array([30, 31], dtype=np.int32)))
    for before, cache in ((k, k_cache), (v, v_cache)):
        expected = before.copy()
        expected[:, [30, 31]] = before[:, [4, 5]]
        np.testing.assert_array_equal(cache.asnumpy(), expected)


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
