"""int8 models served through vLLM's `LLM()`: a compressed-tensors W8A8 checkpoint, and `--quantization`.

W8A8 served in float32 is matched token for token against transformers computing the same int8 arithmetic
(tests/int8_reference.py). W8A16 is served in bfloat16 (vLLM allows its own int8_per_channel_weight_only with
a 16-bit dtype only), which rounds the embeddings, KV cache and output projection too and has no transformers
counterpart; it is matched against the same model run directly (tests/offline_model.py), which the unit tests
hold to the int8 reference: what is checked here is that the flag reaches the model and vLLM's batching of
prompts changes nothing.
"""

from pathlib import Path

import pytest
from int8_reference import FLIPPED_ROUNDING_TOLERANCE, int8_reference
from offline_model import first_differences, greedy
from transformers_argmax import transformers_argmax_of

from .conftest import TINY_NEW_TOKENS

pytestmark = pytest.mark.integration


def test_a_compressed_tensors_w8a8_checkpoint_serves_what_quantizing_at_load_serves(plugin_greedy) -> None:
    served = plugin_greedy["int8-compressed-tensors"]
    assert served["platform"] == "MindSporePlatform"
    assert served["token_ids"] == plugin_greedy["int8-per-channel"]["token_ids"]


def test_served_w8a8_is_token_identical_to_float32_arithmetic_on_the_same_int8_values(plugin_greedy, int8_jobs):
    job = int8_jobs["int8-per-channel"]
    reference = transformers_argmax_of(int8_reference(job["model"], "W8A8"), job["prompts"], TINY_NEW_TOKENS)
    assert plugin_greedy["int8-per-channel"]["token_ids"] == reference


def test_served_w8a8_with_an_int8_lm_head_matches_the_same_arithmetic_up_to_flipped_roundings(
    plugin_greedy, int8_jobs, measurement
):
    """--additional-config quantize_lm_head reaches the model: the output projection's int8 rounding is in the
    reference, and it changes what the tiny model says (else this test could not tell the flag was lost).

    The output projection's input is rounded to int8 as well, so an activation rounded the other way (see
    FLIPPED_ROUNDING_TOLERANCE) moves logits directly; where the reference's top two are that close, a greedy
    token may differ (on a 2-core AMD EPYC with AVX-512: prompt 6 at its last token, the reference's margin 0.6% of
    the largest logit). As for every reduced precision: every prompt but one identical, and at a divergence the
    reference's own margin between its token and ours within the flip."""
    import torch

    job = int8_jobs["int8-per-channel-lm-head"]
    reference_model = int8_reference(job["model"], "W8A8", lm_head=True)
    reference = transformers_argmax_of(reference_model, job["prompts"], TINY_NEW_TOKENS)
    served = plugin_greedy["int8-per-channel-lm-head"]["token_ids"]
    differences = first_differences(reference, served)
    margins = []
    for prompt, expected, ours, position in zip(job["prompts"], reference, served, differences, strict=True):
        if position is not None:
            with torch.no_grad():
                logits = reference_model(torch.tensor([prompt + expected[:position]])).logits[0, -1]
            margins.append(float((logits[expected[position]] - logits[ours[position]]) / logits.abs().max()))
    measurement(
        f"W8A8 + int8 lm_head served vs the same arithmetic: first differing token per prompt {differences}, "
        f"the reference's margin there {[f'{m:.2%}' for m in margins]} of the largest logit"
    )
    assert sum(position is None for position in differences) >= len(reference) - 1, differences
    assert all(margin < FLIPPED_ROUNDING_TOLERANCE for margin in margins), margins
    assert reference != plugin_greedy["int8-per-channel"]["token_ids"]


def test_served_w8a16_in_bfloat16_is_token_identical_to_the_model_run_directly(plugin_greedy, int8_jobs) -> None:
    from vms_plugin.layers.int8 import Int8Scheme

    job = int8_jobs["int8-weight-only"]
    direct = greedy(Path(job["model"]), "bfloat16", job["prompts"], TINY_NEW_TOKENS, Int8Scheme(int8_activations=False))
    assert plugin_greedy["int8-weight-only"]["token_ids"] == direct
