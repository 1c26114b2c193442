"""Reading config.json into model arguments: architecture flags, defaults, and what is refused."""

import pytest

from vms_plugin.models.llama import LlamaArgs

BASE = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "vocab_size": 100,
}


def test_defaults_for_fields_older_checkpoints_lack() -> None:
    args = LlamaArgs.from_hf_config(BASE)
    assert args.num_key_value_heads == 4
    assert args.head_dim == 32
    assert (args.qkv_bias, args.o_bias, args.qk_norm, args.tie_word_embeddings) == (False, False, False, False)


def test_rope_theta_is_read_from_either_config_generation() -> None:
    assert LlamaArgs.from_hf_config({**BASE, "rope_theta": 5e5}).rope.theta == 5e5
    newer = {**BASE, "rope_parameters": {"rope_type": "default", "rope_theta": 1e6}}
    assert LlamaArgs.from_hf_config(newer).rope.theta == 1e6


def test_older_rope_scaling_key_is_read() -> None:
    older = {**BASE, "rope_theta": 5e5, "rope_scaling": {"type": "linear", "factor": 2.0}}
    rope = LlamaArgs.from_hf_config(older).rope
    assert (rope.rope_type, rope.factor, rope.theta) == ("linear", 2.0, 5e5)


@pytest.mark.parametrize("rope_type", ["longrope", "dynamic", "mrope"])
def test_rope_types_not_implemented_are_refused_by_name(rope_type: str) -> None:
    config = {**BASE, "rope_scaling": {"rope_type": rope_type, "factor": 8.0}}
    with pytest.raises(ValueError, match=f"rope type '{rope_type}' is not supported; supported: default, linear"):
        LlamaArgs.from_hf_config(config)


def test_llama3_rope_without_its_original_context_length_is_refused() -> None:
    config = {**BASE, "rope_scaling": {"rope_type": "llama3", "factor": 8.0}}
    with pytest.raises(ValueError, match="needs original_max_position_embeddings"):
        LlamaArgs.from_hf_config(config)
