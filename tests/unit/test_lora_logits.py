"""LoRA adapters made by PEFT on the tiny Llama and Qwen3, through the model: the logits of a step mixing an
adapter's requests and the base model's equal PEFT's (transformers with the adapter, and with it disabled), on
CPU through the fused kernels and on Ascend's composition through the stand-ins of test_ascend_ops.py."""

import numpy as np
import pytest
from integration.lora_adapters import make_adapter
from offline_model import BLOCK_SIZE, mindspore_step
from tiny_models import VOCAB_SIZE
from unit.test_ascend_ops import ascend_stand_ins  # noqa: F401  (a fixture)

TOLERANCE = 1e-3  # as test_model_logits.py's float32 logits against transformers
SLOT = 1  # the adapter's slot of two; slot 0 stays empty


def assert_adapter_logits_match_peft(model_dir, adapter_dir) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from vms_plugin.models.lora_checkpoint import read_adapter
    from vms_plugin.models.registry import build_model
    from vms_plugin.worker.batch import ScheduledRequest

    ours = build_model(model_dir)
    ours.enable_adapters(slots=2, rank=8)
    checkpoint = read_adapter(adapter_dir, max_rank=8)
    for index, layer in enumerate(ours.adapter_layers()):
        layer.fill(SLOT, checkpoint.layers.get(index, {}))
    for attention in ours.attention_layers():
        attention.allocate_kv_cache(16, BLOCK_SIZE)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    reference = PeftModel.from_pretrained(base, adapter_dir).eval()

    def expected(tokens: list[int], slot: int) -> np.ndarray:
        with torch.no_grad():
            if slot == SLOT:
                return reference(torch.tensor([tokens])).logits[0].numpy()
            with reference.disable_adapter():
                return reference(torch.tensor([tokens])).logits[0].numpy()

    rng = np.random.default_rng(0)
    prompts = [rng.integers(0, VOCAB_SIZE, size=n).tolist() for n in (21, 5, 13)]
    blocks, slots = [[3, 7], [1], [9, 0]], [SLOT, -1, SLOT]
    step = [ScheduledRequest(p, 0, b, True, adapter_slot=s) for p, b, s in zip(prompts, blocks, slots, strict=True)]
    logits, start = mindspore_step(ours, step), 0
    for prompt, slot in zip(prompts, slots, strict=True):
        np.testing.assert_allclose(logits[start : start + len(prompt)], expected(prompt, slot), atol=TOLERANCE, rtol=0)
        start += len(prompt)
    next_ids = [int(rng.integers(0, VOCAB_SIZE)) for _ in prompts]  # a decode step reading the paged cache
    step = [
        ScheduledRequest([t], len(p), b, True, adapter_slot=s)
        for t, p, b, s in zip(next_ids, prompts, blocks, slots, strict=True)
    ]
    logits = mindspore_step(ours, step)
    for row, (prompt, token, slot) in enumerate(zip(prompts, next_ids, slots, strict=True)):
        np.testing.assert_allclose(logits[row], expected([*prompt, token], slot)[-1], atol=TOLERANCE, rtol=0)
    adapted = expected(prompts[0], SLOT)[-1]
    assert np.abs(adapted - expected(prompts[0], -1)[-1]).max() > 100 * TOLERANCE, "the adapter should matter"


@pytest.fixture(scope="module")
def tiny_adapters(tiny_model_dirs, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("tiny-lora")
    return {
        name: make_adapter(tiny_model_dirs[name], root / name, seed=5, spread=0.3)
        for name in ("LlamaForCausalLM", "Qwen3ForCausalLM")
    }


@pytest.mark.parametrize("architecture", ["LlamaForCausalLM", "Qwen3ForCausalLM"])
def test_adapter_logits_equal_pefts_on_cpu(architecture, tiny_model_dirs, tiny_adapters) -> None:
    assert_adapter_logits_match_peft(tiny_model_dirs[architecture], tiny_adapters[architecture])


@pytest.mark.parametrize("architecture", ["LlamaForCausalLM", "Qwen3ForCausalLM"])
def test_adapter_logits_equal_pefts_through_the_ascend_composition(
    architecture,
    tiny_model_dirs,
    tiny_adapters,
    ascend_stand_ins,  # noqa: F811
) -> None:
    assert_adapter_logits_match_peft(tiny_model_dirs[architecture], tiny_adapters[architecture])
