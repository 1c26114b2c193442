"""The CPU mixture-of-experts kernel (cpu_kernels.cc's RoutedExperts) against a numpy reference, with and
without a gated shared expert (Qwen2-MoE's).

Routing is a discrete choice, so the reference computes the router's logits from the same rounded values the
kernel multiplies (bfloat16 activations where the build's AVX512-BF16 dot products take 16 rows or more) and the
test checks that no token's k-th and (k+1)-th logits are near a tie. The loads are uneven by construction:
some experts get most tokens, at least one gets none.
"""

import numpy as np
import pytest
from test_cpu_kernels import BUILDS, DOT_MIN_ROWS, STORAGE_TYPES, kernel, packed, stored, uses_bf16_dot_products

HIDDEN, EXPERTS, INTERMEDIATE, TOP_K, SHARED_INTERMEDIATE = 40, 8, 24, 2, 20


def product(x: np.ndarray, weight: np.ndarray, dtype: str, build: str) -> np.ndarray:
    """x @ W^T as the kernel's packed linear computes it: x rounded to bfloat16 when it uses dot products."""
    if dtype == "bfloat16" and len(x) >= DOT_MIN_ROWS and uses_bf16_dot_products(build):
        x = stored(x, "bfloat16")[0]
    return x @ weight.T


def swiglu(x, gate_up, down, dtype: str, build: str) -> np.ndarray:
    projected = product(x, gate_up, dtype, build)
    gate, up = np.split(projected, 2, axis=1)
    return product(gate / (1.0 + np.exp(-gate)) * up, down, dtype, build)


def routed_reference(x, router, gate_up, down, top_k, normalize, dtype, build) -> tuple[np.ndarray, np.ndarray]:
    """(the layer's output [T, E], each token's chosen experts [T, k]): softmax, top k, weighted SwiGLU experts."""
    logits = product(x, router, dtype, build)
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    chosen = np.argsort(-probabilities, axis=1, kind="stable")[:, :top_k]
    ranked = np.sort(logits, axis=1)[:, ::-1]
    assert np.all(ranked[:, top_k - 1] - ranked[:, top_k] > 1e-3), "a near tie would make the choice arbitrary"
    weights = np.take_along_axis(probabilities, chosen, axis=1)
    if normalize:
        weights /= weights.sum(axis=1, keepdims=True)
    out = np.zeros_like(x)
    for expert in range(len(gate_up)):
        tokens, slot = np.nonzero(chosen == expert)
        if len(tokens) == 0:
            continue
        out[tokens] += weights[tokens, slot, None] * swiglu(x[tokens], gate_up[expert], down[expert], dtype, build)
    return out, chosen


def stacked(weights: np.ndarray, dtype: str):
    """(each expert's weight rounded to `dtype`, the experts' packed weights stacked as one Parameter)."""
    from mindspore import Parameter, Tensor

    pieces = [packed(weight, dtype) for weight in weights]
    values = np.stack([rounded for rounded, _ in pieces])
    return values, Parameter(Tensor(np.stack([parameter.asnumpy() for _, parameter in pieces])), name="experts")


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("dtype", STORAGE_TYPES)
@pytest.mark.parametrize("tokens", [1, 5, 37])
@pytest.mark.parametrize(
    ("normalize", "shared"), [(True, False), (False, True)], ids=["normalized", "softmax-weights-shared-expert"]
)
def test_routed_experts_match_numpy_with_uneven_expert_loads(tokens, dtype: str, build: str, normalize, shared) -> None:
    """1 token (a decode step: only its 2 experts run), 5, and 37 (routing, grouping and the weighted sum shared
    between threads; the busiest expert gets 16 rows or more, the bfloat16 dot products' threshold). The shared
    expert, when there is one, runs on every token and is scaled by the sigmoid of its one-output gate."""
    from mindspore import Tensor

    rng = np.random.default_rng(11)
    common = rng.standard_normal(HIDDEN).astype(np.float32)  # a direction every token has
    x = (rng.standard_normal((tokens, HIDDEN)) + common).astype(np.float32)
    router_weight = rng.standard_normal((EXPERTS, HIDDEN)).astype(np.float32) * 0.3
    router_weight[2] += 0.1 * common  # expert 2 is everyone's favourite
    router_weight[5] -= 0.3 * common  # and expert 5 nobody's
    router, router_parameter = packed(router_weight, dtype)
    gate_up, gate_up_parameter = stacked(rng.standard_normal((EXPERTS, 2 * INTERMEDIATE, HIDDEN)) * 0.2, dtype)
    down, down_parameter = stacked(rng.standard_normal((EXPERTS, HIDDEN, INTERMEDIATE)) * 0.2, dtype)
    size = SHARED_INTERMEDIATE
    shared_gate_up, shared_gate_up_parameter = packed(rng.standard_normal((2 * size, HIDDEN)) * 0.2, dtype)
    shared_down, shared_down_parameter = packed(rng.standard_normal((HIDDEN, size)) * 0.2, dtype)
    shared_gate, shared_gate_parameter = packed(rng.standard_normal((1, HIDDEN)) * 0.3, dtype)
    settings = Tensor(np.array([TOP_K, normalize, INTERMEDIATE, 0, size if shared else 0, shared], np.float32))

    out = kernel("RoutedExperts", build)(
        Tensor(x),
        router_parameter,
        gate_up_parameter,
        down_parameter,
        settings,
        shared_gate_up_parameter,
        shared_down_parameter,
        shared_gate_parameter,
    )

    expected, chosen = routed_reference(x, router, gate_up, down, TOP_K, normalize, dtype, build)
    if shared:
        scale = 1.0 / (1.0 + np.exp(-product(x, shared_gate, dtype, build)))
        expected += scale * swiglu(x, shared_gate_up, shared_down, dtype, build)
    loads = np.bincount(chosen.ravel(), minlength=EXPERTS)
    if tokens == 37:
        assert loads[5] == 0 and loads.max() >= DOT_MIN_ROWS and len(set(loads)) > 2, loads
    np.testing.assert_allclose(out.asnumpy(), expected, atol=2e-4 if dtype == "float32" else 2e-3)
