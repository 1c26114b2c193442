"""LoRA in the CPU kernels and in the slots that hold adapters (layers/lora.py): a token adds its request's
adapter exactly as if the adapter were merged into the weights; a tensor-parallel rank's shares add up to the
whole; a slot filled again holds only its new adapter."""

import numpy as np
import pytest
from unit.test_cpu_kernels import BUILDS, DIM, HEADS, KV_HEADS, caches, kernel, random_layer

HIDDEN, INTERMEDIATE, RANK, SLOTS = 96, 80, 8, 2
SIZES = {  # PEFT module -> (out, in) of the projection
    "q_proj": (HEADS * DIM, HIDDEN),
    "k_proj": (KV_HEADS * DIM, HIDDEN),
    "v_proj": (KV_HEADS * DIM, HIDDEN),
    "o_proj": (HIDDEN, HEADS * DIM),
    "gate_proj": (INTERMEDIATE, HIDDEN),
    "up_proj": (INTERMEDIATE, HIDDEN),
    "down_proj": (HIDDEN, INTERMEDIATE),
}


def random_adapter(rng, rank: int, modules=tuple(SIZES)) -> dict:
    from vms_plugin.layers.lora import ProjectionAdapter

    return {
        module: ProjectionAdapter(
            rng.standard_normal((rank, SIZES[module][1])).astype(np.float32) * 0.1,
            rng.standard_normal((SIZES[module][0], rank)).astype(np.float32) * 0.1,
            scale=2.0 / rank,
        )
        for module in modules
    }


def layer_slots(partition=None):
    """LayerAdapters of the test layer's sizes: whole, or `partition`'s share (layers/parallel.py)."""
    from vms_plugin.layers.lora import LayerAdapters, TargetShape

    if partition is None:
        q, kv, intermediate, parts = HEADS * DIM, KV_HEADS * DIM, INTERMEDIATE, {}
    else:
        p = partition
        q, kv, intermediate = p.local_heads * DIM, p.local_kv_heads * DIM, p.local_intermediate
        parts = {
            "qkv": (p.query_rows(), p.kv_rows(), p.kv_rows()),
            "o": (p.columns(p.query_rows()),),
            "gate_up": (p.intermediate_rows(),) * 2,
            "down": (p.columns(p.intermediate_rows()),),
        }
    shapes = {
        "qkv": TargetShape(HIDDEN, (q, kv, kv), parts.get("qkv", (None,) * 3)),
        "o": TargetShape(q, (HIDDEN,), parts.get("o", (None,))),
        "gate_up": TargetShape(HIDDEN, (intermediate,) * 2, parts.get("gate_up", (None,) * 2)),
        "down": TargetShape(intermediate, (HIDDEN,), parts.get("down", (None,))),
    }
    return LayerAdapters(shapes, SLOTS, RANK)


def merged(raw: dict, adapter: dict) -> dict:
    """The four linear weights with the adapter added: W + scale * B @ A per projection, stacked as the model."""
    from vms_plugin.layers.lora import TARGETS

    def delta(module: str) -> np.ndarray:
        if module not in adapter:
            return np.zeros(SIZES[module], np.float32)
        a, b, scale = adapter[module]
        return scale * b @ a

    return {target: raw[target] + np.concatenate([delta(m) for m in modules]) for target, modules in TARGETS.items()}


@pytest.mark.parametrize("build", BUILDS)
def test_a_token_adds_its_requests_adapter_as_the_merged_weights_would(build: str) -> None:
    """Three requests in one DecoderLayer launch, slots 1, none and 0 (adapters of ranks 8 and 4, the second on
    q, v and down only): each request's output and its K/V in the cache equal a launch of the layer with its
    adapter merged into the weights, the base request's the layer's own."""
    from mindspore import Parameter, Tensor

    from vms_plugin.attention.paged import attention_inputs
    from vms_plugin.ops.cpu import CpuOps, LayerPart, adapter_table, layer_constants
    from vms_plugin.worker.batch import ScheduledRequest, build_step_batch

    rng = np.random.default_rng(3)
    _, _, k_cache, v_cache = caches(rng)
    raw: dict = {}
    base = random_layer(rng, "float32", HIDDEN, INTERMEDIATE, k_cache, v_cache, raw)
    adapters = {1: random_adapter(rng, RANK), 0: random_adapter(rng, 4, ("q_proj", "v_proj", "down_proj"))}
    slots = layer_slots()
    for slot, adapter in adapters.items():
        slots.fill(slot, adapter)
    requests = [
        ScheduledRequest(list(range(5)), 0, [0], True, adapter_slot=1),
        ScheduledRequest([7, 8], 3, [1], True),
        ScheduledRequest([9], 6, [2], True, adapter_slot=0),
    ]
    batch = build_step_batch(requests, block_size=16)
    rotary = Tensor(rng.uniform(-1, 1, (2, 32, DIM)).astype(np.float32))
    x = Tensor(rng.standard_normal((len(batch.input_ids), HIDDEN)).astype(np.float32))
    indices = attention_inputs(batch).indices
    layer_kernel = kernel("DecoderLayer", build)

    def launch(weights, table: np.ndarray):
        fresh = {"k_cache": Parameter(k_cache.copy(), name="k"), "v_cache": Parameter(v_cache.copy(), name="v")}
        w = weights._replace(**fresh)
        constants = Tensor(layer_constants(w, False, LayerPart.WHOLE))
        inputs = (w.qkv, w.o, w.gate_up, w.down, rotary, indices, w.k_cache, w.v_cache, Tensor(table))
        out, _ = layer_kernel(x, x, constants, *inputs)
        return out.asnumpy(), w.k_cache.asnumpy(), w.v_cache.asnumpy()

    with_slots = base._replace(adapters=slots)
    ours, k_ours, v_ours = launch(with_slots, adapter_table([with_slots]))
    rows = batch.token_requests
    for slot, request in ((1, 0), (None, 1), (0, 2)):
        weights = raw if slot is None else merged(raw, adapters[slot])
        packed = {name: Parameter(CpuOps().linear_weight(w, "float32"), name=name) for name, w in weights.items()}
        expected, k_expected, v_expected = launch(base._replace(**packed), adapter_table([base]))
        np.testing.assert_allclose(ours[rows == request], expected[rows == request], rtol=1e-4, atol=1e-5)
        written = batch.slot_mapping[rows == request]
        np.testing.assert_allclose(k_ours[:, written], k_expected[:, written], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(v_ours[:, written], v_expected[:, written], rtol=1e-4, atol=1e-5)


def slot_products(slots, slot: int, target: str, x: np.ndarray) -> np.ndarray:
    """What the kernels add for slot `slot` to linear layer `target`'s output: B[s] @ (A[s] @ x)."""
    a, b = slots.pairs[target]
    return x @ a[slot].T @ b[slot].T


def test_two_ranks_shares_of_an_adapter_add_up_to_one_ranks() -> None:
    """Column-parallel qkv and gate_up: the ranks' products are the whole's rows of their outputs; row-parallel o
    and down: the ranks' partial products, on their inputs, sum to the whole's (what the all-reduce does)."""
    from vms_plugin.layers.parallel import Partition

    rng = np.random.default_rng(4)
    adapter = random_adapter(rng, RANK)
    whole = layer_slots()
    whole.fill(1, adapter)
    shares = []
    for rank in range(2):
        partition = Partition(rank, 2, HEADS, KV_HEADS, DIM, INTERMEDIATE, 100)
        share = layer_slots(partition)
        share.fill(1, adapter)
        shares.append((partition, share))
    x = rng.standard_normal((3, HIDDEN)).astype(np.float32)
    for target in ("qkv", "gate_up"):
        full = slot_products(whole, 1, target, x)
        for partition, share in shares:
            part = slot_products(share, 1, target, x)
            rows = np.concatenate([np.arange(p.start, p.stop) + offset for p, offset in _row_parts(partition, target)])
            np.testing.assert_allclose(part, full[:, rows], rtol=1e-5, atol=1e-6)
    for target, width in (("o", HEADS * DIM), ("down", INTERMEDIATE)):
        inputs = rng.standard_normal((3, width)).astype(np.float32)
        full = slot_products(whole, 1, target, inputs)
        summed = sum(
            slot_products(share, 1, target, inputs[:, _input_part(partition, target)]) for partition, share in shares
        )
        np.testing.assert_allclose(summed, full, rtol=1e-4, atol=1e-5)


def _row_parts(partition, target: str):
    """(rows of the whole's stacked outputs, offset of their part) for a column-parallel target."""
    p = partition
    if target == "gate_up":
        return [(p.intermediate_rows(), 0), (p.intermediate_rows(), INTERMEDIATE)]
    q = HEADS * DIM
    return [(p.query_rows(), 0), (p.kv_rows(), q), (p.kv_rows(), q + KV_HEADS * DIM)]


def _input_part(partition, target: str) -> slice:
    rows = partition.query_rows() if target == "o" else partition.intermediate_rows()
    return slice(rows.start, rows.stop)


def test_a_slot_filled_again_holds_only_the_new_adapter_and_misfits_are_named() -> None:
    rng = np.random.default_rng(5)
    slots = layer_slots()
    slots.fill(0, random_adapter(rng, RANK))
    smaller = random_adapter(rng, 2, ("k_proj",))
    slots.fill(0, smaller)
    a, b = slots.pairs["qkv"]
    k_columns = slice(RANK, RANK + 2)
    assert np.count_nonzero(a[0]) == np.count_nonzero(a[0, k_columns]) == a[0, k_columns].size
    k_rows = slice(HEADS * DIM, (HEADS + KV_HEADS) * DIM)
    np.testing.assert_allclose(b[0, k_rows, k_columns], smaller["k_proj"].b * smaller["k_proj"].scale)
    assert not any(np.any(pair.a[0]) for name, pair in slots.pairs.items() if name != "qkv")
    wrong = {"q_proj": random_adapter(rng, RANK)["gate_proj"]}  # gate's shapes where q's belong
    with pytest.raises(ValueError, match=r"q_proj: lora_A .* do not fit the model's projection of 96 inputs and 96"):
        slots.fill(1, wrong)
    with pytest.raises(ValueError, match="LoRA rank 16 is greater than max_lora_rank 8"):
        slots.check(random_adapter(rng, 16, ("v_proj",)))
