"""The CPU latent attention kernel (cpu_kernels.cc's LatentAttention) against a numpy reference that does what
transformers' DeepSeek attention does: the latent decompressed into every head's keys and values (no absorption),
RoPE on the query's and key's rotated parts as complex pairs (interleaved) or rotate-half.

Two requests in scattered blocks: a prefill step (a prompt's tokens attend to each other's freshly written latents),
then a decode step reading the cache; caches stored as float32, float16 and bfloat16 (the reference rounds each
cached row the same way), every instruction-set build.
"""

import numpy as np
import pytest
from test_cpu_kernels import BUILDS, STORAGE_TYPES, kernel, stored

HEADS, NOPE, ROPE, LATENT, VALUE = 3, 8, 6, 20, 5
BLOCK, BLOCKS = 4, 8
EPS, SCALE = 1e-6, 0.3
BLOCK_TABLES = [[5, 2], [0, 7, 3]]  # out of order: a request's context is not contiguous in the cache


def rotated(x: np.ndarray, positions: np.ndarray, cos_sin, interleaved: bool) -> np.ndarray:
    """x [T, ..., R] rotated at each token's position: pairs (x[2i], x[2i + 1]) as complex numbers times e^(i p f_i)
    (transformers' DeepSeek-V2 form), or rotate-half."""
    cos, sin = (table[positions][:, None, : ROPE // 2] for table in cos_sin)
    x = x.reshape(len(x), -1, ROPE)
    if interleaved:
        pairs = x[..., 0::2] + 1j * x[..., 1::2]
        turned = pairs * (cos + 1j * sin)
        out = np.stack([turned.real, turned.imag], axis=-1).reshape(x.shape)
    else:
        first, second = x[..., : ROPE // 2], x[..., ROPE // 2 :]
        out = np.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)
    return out.astype(np.float32)


def reference(q, kv, norm, kv_b, positions, requests, tokens_seen, cos_sin, interleaved, dtype):
    """Each token's [H * Dv] output, from every earlier-or-same position's latent row of its request (rows rounded
    to the cache's type)."""
    latent = kv[:, :LATENT] / np.sqrt((kv[:, :LATENT] ** 2).mean(axis=1, keepdims=True) + EPS) * norm
    k_rope = rotated(kv[:, LATENT:], positions, cos_sin, interleaved)[:, 0]
    rows = stored(np.concatenate([latent, k_rope], axis=1).astype(np.float32), dtype)[0]
    latent, k_rope = rows[:, :LATENT], rows[:, LATENT:]
    per_head = kv_b.reshape(HEADS, NOPE + VALUE, LATENT)
    keys = np.einsum("hnl,tl->thn", per_head[:, :NOPE], latent)
    values = np.einsum("hvl,tl->thv", per_head[:, NOPE:], latent)
    q = q.reshape(len(q), HEADS, NOPE + ROPE)
    q_rope = rotated(q[..., NOPE:], positions, cos_sin, interleaved)
    out = np.zeros((len(q), HEADS, VALUE), np.float32)
    seen = [(keys[j], k_rope[j], values[j]) for j in range(len(q))]
    for t in range(len(q)):
        mine = [seen[j] for j in range(len(q)) if requests[j] == requests[t] and positions[j] <= positions[t]]
        context = tokens_seen[requests[t]] + mine  # earlier steps' rows first: (keys, k_rope, values) of each
        scores = np.array(
            [
                [(q[t, h, :NOPE] @ keys_j[h] + q_rope[t, h] @ k_rope_j) * SCALE for keys_j, k_rope_j, _ in context]
                for h in range(HEADS)
            ]
        )
        weights = np.exp(scores - scores.max(axis=1, keepdims=True))
        weights /= weights.sum(axis=1, keepdims=True)
        out[t] = np.einsum("hj,jhv->hv", weights, np.stack([values_j for _, _, values_j in context]))
    return out.reshape(len(q), -1), seen


def step_indices(positions, requests, blocks=BLOCK_TABLES):
    """The step's int32 indices (attention/paged.py's layout)."""
    from mindspore import Tensor

    context = max(len(table) for table in blocks) * BLOCK
    context_slots = np.zeros((len(blocks), context), np.int32)
    for r, table in enumerate(blocks):
        slots = [b * BLOCK + o for b in table for o in range(BLOCK)]
        context_slots[r, : len(slots)] = slots
    slot_of = np.array([context_slots[r, p] for r, p in zip(requests, positions, strict=True)], np.int32)
    parts = ([len(blocks), context], positions, slot_of, requests, context_slots.reshape(-1))
    return Tensor(np.concatenate([np.asarray(part, np.int32) for part in parts]))


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("dtype", STORAGE_TYPES)
@pytest.mark.parametrize("interleaved", [True, False], ids=["interleaved", "rotate-half"])
def test_latent_attention_matches_decompressed_attention(build: str, dtype: str, interleaved: bool) -> None:
    import mindspore as ms
    from mindspore import Parameter, Tensor, ops

    from vms_plugin.layers.rope_scaling import RopeParameters
    from vms_plugin.layers.rotary import rotary_tables

    rng = np.random.default_rng(5)
    cos_sin = rotary_tables(ROPE, 64, RopeParameters())
    norm = (1 + 0.2 * rng.standard_normal(LATENT)).astype(np.float32)
    kv_b = (0.4 * rng.standard_normal((HEADS * (NOPE + VALUE), LATENT))).astype(np.float32)
    per_head = kv_b.reshape(HEADS, NOPE + VALUE, LATENT)
    header = [HEADS, NOPE, ROPE, LATENT, VALUE, SCALE, EPS, interleaved]
    settings = Tensor(np.concatenate([np.array(header, np.float32), norm]))
    w_uk, w_uv = (Tensor(np.ascontiguousarray(part)) for part in (per_head[:, :NOPE], per_head[:, NOPE:]))
    cache_type = {"float32": ms.float32, "float16": ms.float16, "bfloat16": ms.bfloat16}[dtype]
    cache = Parameter(ops.zeros((BLOCKS * BLOCK, LATENT + ROPE), cache_type), name="latent_cache")
    launch = kernel("LatentAttention", build)
    seen: list[list] = [[], []]

    # Prefill: request 0's 6 tokens (over two blocks), request 1's 3; then decode one token each.
    for positions, requests in (([0, 1, 2, 3, 4, 5, 0, 1, 2], [0] * 6 + [1] * 3), ([6, 3], [0, 1])):
        count = len(positions)
        q = rng.standard_normal((count, HEADS * (NOPE + ROPE))).astype(np.float32)
        kv = rng.standard_normal((count, LATENT + ROPE)).astype(np.float32)
        out = launch(
            Tensor(q),
            Tensor(kv),
            settings,
            w_uk,
            w_uv,
            Tensor(np.stack(cos_sin)),
            step_indices(positions, requests),
            cache,
        ).asnumpy()
        expected, rows = reference(q, kv, norm, kv_b, np.array(positions), requests, seen, cos_sin, interleaved, dtype)
        np.testing.assert_allclose(out, expected, atol=1e-4 if dtype == "float32" else 2e-3, rtol=1e-4)
        for request, row in zip(requests, rows, strict=True):
            seen[request].append(row)


def test_latent_settings_that_do_not_fit_the_inputs_fail_the_launch() -> None:
    """A query, latent or absorbed weight of another size than the settings say: refused, not read past."""
    import mindspore as ms
    from mindspore import Parameter, Tensor, ops

    header = np.array([HEADS, NOPE, ROPE, LATENT, VALUE, SCALE, EPS, 1], np.float32)
    settings = Tensor(np.concatenate([header, np.ones(LATENT, np.float32)]))
    rotary = Tensor(np.zeros((2, 16, ROPE), np.float32))
    cache = Parameter(ops.zeros((BLOCKS * BLOCK, LATENT + ROPE), ms.float32), name="latent_cache")
    w_uk = Tensor(np.zeros((HEADS, NOPE, LATENT), np.float32))
    w_uv = Tensor(np.zeros((HEADS, VALUE, LATENT), np.float32))
    q = Tensor(np.zeros((1, HEADS * (NOPE + ROPE)), np.float32))
    kv = Tensor(np.zeros((1, LATENT + ROPE), np.float32))
    indices = step_indices([0], [0])
    launch = kernel("LatentAttention", "native")
    wrong = [
        (Tensor(np.zeros((1, HEADS * NOPE), np.float32)), kv, w_uk, w_uv),
        (q, Tensor(np.zeros((1, LATENT), np.float32)), w_uk, w_uv),
        (q, kv, Tensor(np.zeros((HEADS, NOPE, LATENT - 1), np.float32)), w_uv),
        (q, kv, w_uk, Tensor(np.zeros((HEADS, VALUE + 1, LATENT), np.float32))),
    ]
    for query, latent, uk, uv in wrong:
        with pytest.raises(RuntimeError):
            launch(query, latent, settings, uk, uv, rotary, indices, cache).asnumpy()


@pytest.mark.parametrize("dtype", STORAGE_TYPES)
def test_copy_rows_copies_latent_rows_in_place(dtype: str) -> None:
    """vLLM's copy-on-write of a block for a latent cache: rows src[i] -> dst[i], the others untouched."""
    from mindspore import Parameter, Tensor

    rng = np.random.default_rng(9)
    values, stored_values = stored(rng.standard_normal((BLOCKS * BLOCK, LATENT + ROPE)).astype(np.float32), dtype)
    cache = Parameter(stored_values, name="latent_cache")
    src, dst = np.array([4, 5, 6, 7], np.int32), np.array([24, 25, 26, 27], np.int32)
    kernel("CopyRows", "native")(cache, Tensor(src), Tensor(dst))
    expected = values.copy()
    expected[dst] = values[src]
    np.testing.assert_array_equal(cache.asnumpy().astype(np.float32), expected)
