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


def test_routed_layers_follow_qwen_moe_configs_in_either_naming() -> None:
    """Qwen's checkpoints name the expert count num_experts, transformers 5 saves num_local_experts."""
    from vms_plugin.layers.experts import ExpertArgs

    qwen = {**BASE, "num_hidden_layers": 6, "moe_intermediate_size": 32, "num_experts_per_tok": 2}
    sparse = {**qwen, "num_experts": 8, "mlp_only_layers": [0], "decoder_sparse_step": 2, "norm_topk_prob": True}
    args = ExpertArgs.qwen(sparse, 6)
    assert (args.num_experts, args.routing.top_k, args.intermediate_size, args.routing.normalize) == (8, 2, 32, True)
    assert args.sparse_layers == {1, 3, 5}
    saved_by_transformers = ExpertArgs.qwen({**qwen, "num_local_experts": 4}, 6)
    assert saved_by_transformers.num_experts == 4 and not saved_by_transformers.routing.normalize
    assert saved_by_transformers.sparse_layers == set(range(6))
    mixtral = ExpertArgs.mixtral({**BASE, "num_local_experts": 8, "num_experts_per_tok": 2}, 2)
    assert (mixtral.intermediate_size, mixtral.routing.normalize, mixtral.sparse_layers) == (256, True, {0, 1})


DEEPSEEK = {
    **BASE,
    "num_hidden_layers": 4,
    "n_routed_experts": 16,
    "num_experts_per_tok": 2,
    "moe_intermediate_size": 24,
    "n_shared_experts": 2,
    "first_k_dense_replace": 2,
    "n_group": 4,
    "topk_group": 2,
    "routed_scaling_factor": 2.5,
    "norm_topk_prob": True,
}


def test_deepseek_routing_follows_topk_method_and_scoring_func() -> None:
    """V3 (noaux_tc): sigmoid, correction bias, groups worth their two best, normalised and scaled; V2's
    group-limited greedy: softmax, groups worth their best, never normalised; greedy: no groups."""
    from vms_plugin.layers.experts import ExpertArgs
    from vms_plugin.ops.interface import Routing

    v3 = ExpertArgs.deepseek({**DEEPSEEK, "topk_method": "noaux_tc", "scoring_func": "sigmoid"}, 4)
    assert v3.routing == Routing(2, True, sigmoid=True, groups=4, top_groups=2, group_by_top_two=True, scaling=2.5)
    assert (v3.num_experts, v3.sparse_layers, v3.shared_intermediate_size) == (16, {2, 3}, 48)
    assert v3.correction_bias and not v3.shared_gate
    v2 = ExpertArgs.deepseek({**DEEPSEEK, "topk_method": "group_limited_greedy"}, 4)
    assert v2.routing == Routing(2, False, groups=4, top_groups=2, scaling=2.5) and not v2.correction_bias
    greedy = ExpertArgs.deepseek({**DEEPSEEK, "topk_method": "greedy", "first_k_dense_replace": 0}, 4)
    assert greedy.routing.groups == 1 and greedy.sparse_layers == {0, 1, 2, 3}
    with pytest.raises(ValueError, match="topk_method 'random' is not supported; supported: greedy, group_limited"):
        ExpertArgs.deepseek({**DEEPSEEK, "topk_method": "random"}, 4)
    with pytest.raises(ValueError, match="scoring_func 'tanh' is not supported; supported: softmax, sigmoid"):
        ExpertArgs.deepseek({**DEEPSEEK, "topk_method": "noaux_tc", "scoring_func": "tanh"}, 4)


def test_a_latent_attention_model_whose_heads_do_not_split_is_refused_naming_them() -> None:
    from types import SimpleNamespace

    from vms_plugin.models.deepseek_v2 import DeepseekV3ForCausalLM

    latent = {"kv_lora_rank": 64, "qk_nope_head_dim": 16, "qk_rope_head_dim": 16, "v_head_dim": 16}
    config = {**DEEPSEEK, **latent, "topk_method": "noaux_tc", "num_attention_heads": 2, "num_key_value_heads": 2}
    four_ranks = SimpleNamespace(rank=0, world_size=4)
    with pytest.raises(ValueError, match=r"--tensor-parallel-size 4 does not divide the model's 2 attention heads"):
        DeepseekV3ForCausalLM.from_hf_config(config, group=four_ranks, expert_parallel=True)


def test_experts_that_do_not_split_over_the_ranks_are_refused_naming_the_sizes() -> None:
    from vms_plugin.layers.experts import ExpertArgs, ExpertShare

    args = ExpertArgs.qwen({**BASE, "num_experts": 6, "num_experts_per_tok": 2, "moe_intermediate_size": 30}, 2)
    with pytest.raises(ValueError, match=r"--enable-expert-parallel over 4 ranks needs the expert count \(6\)"):
        ExpertShare(0, 4, True, args)
    with pytest.raises(ValueError, match=r"does not divide each expert's 30 features; .*--enable-expert-parallel"):
        ExpertShare(0, 4, False, args)
    share = ExpertShare(1, 2, True, args)
    assert (share.first, share.count, share.intermediate, list(share.experts())) == (3, 3, 30, [3, 4, 5])
    assert share.feature_rows() is None
    split = ExpertShare(1, 2, False, args)
    assert (split.first, split.count, split.intermediate, split.feature_rows()) == (0, 6, 15, (0, 15, 30))


def test_latent_attention_reads_deepseek_configs_and_refuses_biases() -> None:
    from vms_plugin.layers.latent_attention import LatentArgs

    latent = {"kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128}
    v2_lite = LatentArgs.from_hf_config({**latent, "q_lora_rank": None})  # V2 configs have no rope_interleave
    assert (v2_lite.query_rank, v2_lite.width, v2_lite.interleaved) == (0, 576, True)
    v3 = LatentArgs.from_hf_config({**latent, "q_lora_rank": 1536, "rope_interleave": False})
    assert (v3.query_rank, v3.interleaved) == (1536, False)
    with pytest.raises(ValueError, match="latent attention without biases; this config sets attention_bias"):
        LatentArgs.from_hf_config({**latent, "attention_bias": True})
