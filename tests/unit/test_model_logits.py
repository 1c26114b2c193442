"""Logits of the MindSpore models against transformers on tiny random checkpoints of every architecture.

Tolerance: max |difference| < 1e-3 in float32 (measured: ~1e-5 on these models, 4e-5 on SmolLM2-135M).
The batch mixes requests of different lengths, then decodes through the paged KV cache, so masking, block
addressing and rotary positions are all on the path being compared.
"""

import json

import numpy as np
import pytest
from offline_model import BLOCK_SIZE, mindspore_step
from tiny_models import (
    ARCHITECTURES,
    DEEPSEEK_ARCHITECTURES,
    GLM_ARCHITECTURE,
    MOE_ARCHITECTURES,
    ROPE_VARIANTS,
    VOCAB_SIZE,
    save_tiny_model,
)

TOLERANCE = 1e-3


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_logits_match_transformers_through_prefill_and_paged_decode(architecture, tiny_model_dirs) -> None:
    assert_logits_match_transformers(tiny_model_dirs[architecture])


@pytest.mark.parametrize("architecture", MOE_ARCHITECTURES)
def test_mixture_of_experts_logits_match_transformers_through_prefill_and_paged_decode(
    architecture, tiny_moe_dirs
) -> None:
    """8 experts, top 2, unevenly loaded (random routers); the tiny Qwen3-MoE's first layer is dense."""
    assert_logits_match_transformers(tiny_moe_dirs[architecture])


@pytest.mark.parametrize("architecture", DEEPSEEK_ARCHITECTURES)
def test_deepseek_logits_match_transformers_through_prefill_and_paged_decode(architecture, tiny_deepseek_dirs) -> None:
    """Latent attention with (V3) and without (V2) a query rank, YaRN with DeepSeek's mscale, 8 experts in 4 groups
    top 2 (V3: sigmoid with the correction bias; V2: softmax), shared experts, dense layers first."""
    assert_logits_match_transformers(tiny_deepseek_dirs[architecture])


def test_glm_moe_logits_match_transformers_through_prefill_and_paged_decode(tiny_deepseek_dirs) -> None:
    """GLM-4.5's MoE: q/k/v biases, q/k norms, RoPE on the first half of each head's features, DeepSeek-V3's
    routing with a shared expert, a dense layer first."""
    assert_logits_match_transformers(tiny_deepseek_dirs[GLM_ARCHITECTURE])


@pytest.mark.parametrize("rope", ["plain-interleaved", "plain-rotate-half"])
def test_deepseek_with_plain_rope_matches_transformers(rope: str, tmp_path) -> None:
    """RoPE without YaRN, on interleaved pairs (DeepSeek's) and, with rope_interleave false, as rotate-half (a
    case vLLM's CPU path gets wrong, so only transformers is the reference here)."""
    overrides = {"rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}}
    if rope == "plain-rotate-half":
        overrides["rope_interleave"] = False
    model_dir = save_tiny_model("DeepseekV3ForCausalLM", tmp_path / rope)
    config_path = model_dir / "config.json"  # neither change alters a weight's shape
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), **overrides}))
    assert_logits_match_transformers(model_dir)


@pytest.mark.parametrize("variant", ROPE_VARIANTS)
def test_rope_scaling_variants_match_transformers(variant: str, tmp_path) -> None:
    architecture = "Qwen2ForCausalLM" if variant == "yarn" else "LlamaForCausalLM"
    model_dir = save_tiny_model(architecture, tmp_path / variant, rope_parameters=ROPE_VARIANTS[variant])
    assert_logits_match_transformers(model_dir)


def test_a_sharded_checkpoint_with_an_index_loads_the_same_model(tmp_path) -> None:
    model_dir = save_tiny_model("LlamaForCausalLM", tmp_path / "sharded", max_shard_size="200KB")
    assert (model_dir / "model.safetensors.index.json").is_file()
    assert len(list(model_dir.glob("*.safetensors"))) > 2
    assert_logits_match_transformers(model_dir)


def assert_logits_match_transformers(model_dir) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from vms_plugin.models.registry import build_model
    from vms_plugin.worker.batch import ScheduledRequest

    ours = build_model(model_dir)
    for attention in ours.attention_layers():
        attention.allocate_kv_cache(16, BLOCK_SIZE)
    reference = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    rng = np.random.default_rng(0)
    prompts = [rng.integers(0, VOCAB_SIZE, size=n).tolist() for n in (21, 5, 13)]
    blocks = [[3, 7], [1], [9, 0]]

    logits = mindspore_step(ours, [ScheduledRequest(p, 0, b, True) for p, b in zip(prompts, blocks, strict=True)])
    start = 0
    for prompt in prompts:
        with torch.no_grad():
            expected = reference(torch.tensor([prompt])).logits[0].numpy()
        np.testing.assert_allclose(logits[start : start + len(prompt)], expected, atol=TOLERANCE, rtol=0)
        start += len(prompt)

    sequences = [list(p) for p in prompts]
    for _ in range(3):  # decode: one token per request, reading the earlier tokens from the paged cache
        next_ids = [int(rng.integers(0, VOCAB_SIZE)) for _ in sequences]
        step = [ScheduledRequest([t], len(s), b, True) for t, s, b in zip(next_ids, sequences, blocks, strict=True)]
        logits = mindspore_step(ours, step)
        for row, (sequence, token) in enumerate(zip(sequences, next_ids, strict=True)):
            sequence.append(token)
            with torch.no_grad():
                expected = reference(torch.tensor([sequence])).logits[0, -1].numpy()
            np.testing.assert_allclose(logits[row], expected, atol=TOLERANCE, rtol=0)
