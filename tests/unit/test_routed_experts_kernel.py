"""The CPU mixture-of-experts kernel (cpu_kernels.cc's RoutedExperts) against a numpy reference, with and
without a gated shared expert (Qwen2-MoE's), and with DeepSeek's routings (V3's sigmoid scores, correction bias and
groups worth their two best; V2's group-limited softmax), written after transformers' routers.

Routing is a discrete choice, so the reference computes the router's logits from the same rounded values the
kernel multiplies (bfloat16 activations where the build's AVX512-BF16 dot products take 16 rows or more) and the
test checks that no token's k-th and (k+1)-th logits are near a tie. The loads are uneven by construction:
some experts get most tokens, at least one gets none.
"""

import numpy as np
import pytest
from test_cpu_kernels import BUILDS_ONE_ARM, DOT_MIN_ROWS, STORAGE_TYPES, kernel, packed, stored, uses_bf16_dot_products

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


def choose(logits: np.ndarray, routing, bias: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(each token's chosen experts [T, k], the scores they are weighed by [T, X]) as transformers' Qwen-MoE,
    DeepseekV2 and DeepseekV3 routers choose."""
    if routing.sigmoid:
        scores = 1.0 / (1.0 + np.exp(-logits))
    else:
        scores = np.exp(logits - logits.max(axis=1, keepdims=True))
        scores /= scores.sum(axis=1, keepdims=True)
    choice = scores if bias is None else scores + bias
    if routing.groups > 1:
        grouped = choice.reshape(len(choice), routing.groups, -1)
        best = np.sort(grouped, axis=2)[:, :, ::-1]
        worth = best[:, :, :2].sum(axis=2) if routing.group_by_top_two else best[:, :, 0]
        kept = np.argsort(-worth, axis=1, kind="stable")[:, : routing.top_groups]
        mask = np.zeros_like(worth, dtype=bool)
        np.put_along_axis(mask, kept, True, axis=1)
        choice = np.where(np.repeat(mask, grouped.shape[2], axis=1), choice, -np.inf)
    chosen = np.argsort(-choice, axis=1, kind="stable")[:, : routing.top_k]
    ranked = np.sort(choice, axis=1)[:, ::-1]
    assert np.all(ranked[:, routing.top_k - 1] - ranked[:, routing.top_k] > 1e-5), "a near tie: arbitrary choice"
    return chosen, scores


def routed_reference(x, router, gate_up, down, routing, bias, dtype, build) -> tuple[np.ndarray, np.ndarray]:
    """(the layer's output [T, E], each token's chosen experts [T, k]): routing, weighted SwiGLU experts."""
    chosen, scores = choose(product(x, router, dtype, build), routing, bias)
    weights = np.take_along_axis(scores, chosen, axis=1)
    if routing.normalize:
        weights /= weights.sum(axis=1, keepdims=True) + 1e-20
    weights *= routing.scaling
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


def settings_of(routing, shared_size: int, gated: bool, bias: np.ndarray | None, first: int = 0):
    """ExpertSettings as ops/cpu.py's expert_settings writes them; `first`: the first of the experts held."""
    from mindspore import Tensor

    r = routing
    header = [r.top_k, r.normalize, INTERMEDIATE, 0, shared_size, gated, r.sigmoid, r.groups, r.top_groups]
    header += [r.group_by_top_two, r.scaling, bias is not None, first, EXPERTS]
    return Tensor(np.concatenate([np.array(header, np.float32), *(() if bias is None else (bias,))]))


def routings():
    from vms_plugin.ops.interface import Routing

    return {
        "normalized": (Routing(TOP_K, normalize=True), None),
        "softmax-weights-shared-expert": (Routing(TOP_K, normalize=False), None),
        "deepseek-v3-noaux-tc": (
            Routing(TOP_K, True, sigmoid=True, groups=4, top_groups=2, group_by_top_two=True, scaling=2.5),
            "bias",
        ),
        "deepseek-v2-group-limited": (Routing(TOP_K, False, groups=4, top_groups=2, scaling=16.0), None),
    }


SHARED = {  # (shared expert, gated)
    "normalized": (False, False),
    "softmax-weights-shared-expert": (True, True),
    "deepseek-v3-noaux-tc": (True, False),
    "deepseek-v2-group-limited": (True, False),
}


@pytest.mark.parametrize("build", BUILDS_ONE_ARM)
@pytest.mark.parametrize("dtype", STORAGE_TYPES)
@pytest.mark.parametrize("tokens", [1, 5, 37])
@pytest.mark.parametrize("case", list(SHARED))
def test_routed_experts_match_numpy_with_uneven_expert_loads(tokens, dtype: str, build: str, case: str) -> None:
    """1 token (a decode step: only its 2 experts run), 5, and 37 (routing, grouping and the weighted sum shared
    between threads; the busiest expert gets 16 rows or more, the bfloat16 dot products' threshold). The shared
    expert, when there is one, runs on every token, scaled by the sigmoid of its one-output gate when gated
    (Qwen2-MoE) and as it is (DeepSeek). DeepSeek's routings: 8 experts in 4 groups, 2 groups kept."""
    from mindspore import Tensor

    routing, bias_kind = routings()[case]
    shared, gated = SHARED[case]
    rng = np.random.default_rng(11)
    common = rng.standard_normal(HIDDEN).astype(np.float32)  # a direction every token has
    x = (rng.standard_normal((tokens, HIDDEN)) + common).astype(np.float32)
    router_weight = rng.standard_normal((EXPERTS, HIDDEN)).astype(np.float32) * 0.3
    router_weight[2] += 0.1 * common  # expert 2 is everyone's favourite
    router_weight[5] -= 0.3 * common  # and expert 5 nobody's
    # Choosing by score + bias while weighing by score alone: a bias that reorders experts 6 and 7 ahead.
    bias = np.array([0, 0, 0, 0, 0, 0, 0.3, 0.2], np.float32) if bias_kind else None
    router, router_parameter = packed(router_weight, dtype)
    gate_up, gate_up_parameter = stacked(rng.standard_normal((EXPERTS, 2 * INTERMEDIATE, HIDDEN)) * 0.2, dtype)
    down, down_parameter = stacked(rng.standard_normal((EXPERTS, HIDDEN, INTERMEDIATE)) * 0.2, dtype)
    size = SHARED_INTERMEDIATE
    shared_gate_up, shared_gate_up_parameter = packed(rng.standard_normal((2 * size, HIDDEN)) * 0.2, dtype)
    shared_down, shared_down_parameter = packed(rng.standard_normal((HIDDEN, size)) * 0.2, dtype)
    shared_gate, shared_gate_parameter = packed(rng.standard_normal((1, HIDDEN)) * 0.3, dtype)
    settings = settings_of(routing, size if shared else 0, gated, bias)

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

    expected, chosen = routed_reference(x, router, gate_up, down, routing, bias, dtype, build)
    if shared:
        scale = 1.0 / (1.0 + np.exp(-product(x, shared_gate, dtype, build))) if gated else 1.0
        expected += scale * swiglu(x, shared_gate_up, shared_down, dtype, build)
    loads = np.bincount(chosen.ravel(), minlength=EXPERTS)
    if tokens == 37:
        assert loads.max() >= DOT_MIN_ROWS and len(set(loads)) > 2, loads
        assert loads[5] == 0 or routing.groups > 1, loads
    if bias is not None and tokens > 1:
        assert loads[6] + loads[7] > 0, "the bias should bring experts 6 and 7 in"
    scale = max(1.0, routing.scaling)
    np.testing.assert_allclose(out.asnumpy(), expected, atol=scale * (2e-4 if dtype == "float32" else 2e-3))


def test_routing_settings_that_do_not_fit_the_experts_fail_the_launch() -> None:
    """Groups that do not divide the experts, or more experts asked for than the kept groups hold, or a bias
    announced but missing: the kernel refuses (MindSpore raises) rather than reading past its inputs."""
    from mindspore import Tensor

    from vms_plugin.ops.interface import Routing

    rng = np.random.default_rng(3)
    x = Tensor(rng.standard_normal((2, HIDDEN)).astype(np.float32))
    _, router = packed(rng.standard_normal((EXPERTS, HIDDEN)).astype(np.float32), "float32")
    _, gate_up = stacked(rng.standard_normal((EXPERTS, 2 * INTERMEDIATE, HIDDEN)), "float32")
    _, down = stacked(rng.standard_normal((EXPERTS, HIDDEN, INTERMEDIATE)), "float32")
    bad = [
        settings_of(Routing(TOP_K, True, groups=3, top_groups=1), 0, False, None),
        settings_of(Routing(5, True, groups=4, top_groups=2), 0, False, None),
        settings_of(Routing(TOP_K, True), 0, False, None)[:13],
        Tensor(np.concatenate([settings_of(Routing(TOP_K, True), 0, False, None).asnumpy()[:11], [1.0, 0, EXPERTS]])),
        settings_of(Routing(TOP_K, True), 0, False, None, first=1),  # experts 1-8 of 8
    ]
    for settings in bad:
        with pytest.raises(RuntimeError):
            kernel("RoutedExperts", "native")(x, router, gate_up, down, settings, router, router, router).asnumpy()


@pytest.mark.parametrize("dtype", STORAGE_TYPES)
def test_expert_parallel_ranks_each_run_their_experts_and_sum_to_the_whole_layer(dtype: str) -> None:
    """Two launches holding experts 0-3 and 4-7 (an expert-parallel pair of ranks) route every token over all 8
    and add only their own experts' results: their sum is the one-rank layer's output, DeepSeek-V3's routing (bias,
    groups) included."""
    from mindspore import Parameter, Tensor

    routing, _ = routings()["deepseek-v3-noaux-tc"]
    rng = np.random.default_rng(17)
    x = Tensor(rng.standard_normal((23, HIDDEN)).astype(np.float32))
    _, router = packed((rng.standard_normal((EXPERTS, HIDDEN)) * 0.3).astype(np.float32), dtype)
    _, gate_up = stacked(rng.standard_normal((EXPERTS, 2 * INTERMEDIATE, HIDDEN)) * 0.2, dtype)
    _, down = stacked(rng.standard_normal((EXPERTS, HIDDEN, INTERMEDIATE)) * 0.2, dtype)
    bias = np.array([0, 0.1, 0, 0, 0, 0, 0.3, 0.2], np.float32)
    launch = kernel("RoutedExperts", "native")

    def run(first: int, count: int):
        held = [Parameter(Tensor(w.asnumpy()[first : first + count]), name=f"held{first}") for w in (gate_up, down)]
        settings = settings_of(routing, 0, False, bias, first)
        return launch(x, router, *held, settings, router, router, router).asnumpy()

    whole, halves = run(0, EXPERTS), [run(0, EXPERTS // 2), run(EXPERTS // 2, EXPERTS // 2)]
    assert np.abs(halves[0]).max() > 0 and np.abs(halves[1]).max() > 0  # both ranks' experts were chosen
    np.testing.assert_allclose(halves[0] + halves[1], whole, atol=1e-5, rtol=1e-5)
