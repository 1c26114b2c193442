"""Tiny random-weight checkpoints of each architecture, made with transformers and saved like real ones.

head_dim is 64 because vLLM's own CPU attention supports only some head sizes. Every parameter is drawn at random
(biases and norm weights included: transformers would start them at 0 and 1, which would leave Qwen2's q/k/v
biases and Qwen3's q/k norms untested), with a scale that keeps logits peaked so that greedy choices are not
coin flips between near-equal logits.
"""

from pathlib import Path

VOCAB_SIZE = 512
ARCHITECTURES = ("LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM")
# Mixture of experts: 8 experts, top 2. The tiny Qwen3-MoE's first layer keeps a dense MLP (`mlp_only_layers`), the
# tiny Qwen2-MoE's last; Qwen2-MoE adds a gated shared expert and keeps its routing weights unnormalised.
MOE_ARCHITECTURES = ("Qwen3MoeForCausalLM", "MixtralForCausalLM", "Qwen2MoeForCausalLM")
MOE_SIZES = {"num_experts_per_tok": 2, "num_hidden_layers": 3}
# DeepSeek: multi-head latent attention with DeepSeek's real latent size (kv_lora_rank 512 + rope 64, the only one
# vLLM's CPU MLA kernel takes), 8 experts top 2 in 4 groups with the 2 best kept, shared experts, YaRN with DeepSeek's
# mscale as their checkpoints have it (vLLM's CPU path rotates a query of several heads wrongly with plain RoPE and
# interleaved pairs: its rotary_embedding op on a [T, H, 64] query; its YaRN path is its own, in torch). V3 (noaux_tc:
# sigmoid, correction bias) with a query rank and 2 dense layers before its 2 routed ones; V2 (group-limited greedy
# softmax) without a query rank, 1 dense layer then 2 routed.
DEEPSEEK_ARCHITECTURES = ("DeepseekV3ForCausalLM", "DeepseekV2ForCausalLM")
# GLM-4.5's MoE: q/k/v biases, q/k norms, RoPE on half of each head, DeepSeek-V3's routing (here 8 experts top 2 in
# 2 groups, 1 kept), a shared expert, 1 dense layer then 2 routed.
GLM_ARCHITECTURE = "Glm4MoeForCausalLM"


# RoPE variants with small original context lengths, so that scaling moves logits at the tests' short positions.
ROPE_VARIANTS = {
    "linear": {"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0},
    "llama3": {
        "rope_type": "llama3",
        "rope_theta": 500000.0,
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64,
    },
    "yarn": {"rope_type": "yarn", "rope_theta": 1000000.0, "factor": 4.0, "original_max_position_embeddings": 64},
}


def deepseek_config(architecture: str, common: dict):
    from transformers import DeepseekV2Config, DeepseekV3Config

    common = {key: value for key, value in common.items() if key != "head_dim"}
    common.update(num_attention_heads=4, num_key_value_heads=4)  # MLA expands the latent to every head
    latent = dict(kv_lora_rank=512, qk_rope_head_dim=64, qk_nope_head_dim=32, v_head_dim=32)
    experts = dict(n_routed_experts=8, num_experts_per_tok=2, moe_intermediate_size=64, n_group=4, topk_group=2)
    if architecture == "DeepseekV3ForCausalLM":
        yarn = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 128}
        yarn.update(mscale=1.0, mscale_all_dim=1.0, beta_fast=32, beta_slow=1)  # DeepSeek-V3's mscales
        return DeepseekV3Config(
            **{**common, "num_hidden_layers": 4},
            **latent,
            **experts,
            q_lora_rank=48,
            n_shared_experts=1,
            first_k_dense_replace=2,
            routed_scaling_factor=2.5,
            norm_topk_prob=True,
            topk_method="noaux_tc",
            scoring_func="sigmoid",
            rope_parameters=yarn,
            tie_word_embeddings=False,
        )
    return DeepseekV2Config(
        **{**common, "num_hidden_layers": 3},
        **latent,
        **experts,
        q_lora_rank=None,
        n_shared_experts=2,
        first_k_dense_replace=1,
        routed_scaling_factor=1.5,
        topk_method="group_limited_greedy",
        scoring_func="softmax",
        rope_parameters={
            **{"rope_type": "yarn", "rope_theta": 10000.0, "factor": 8.0, "original_max_position_embeddings": 64},
            **{"mscale": 0.707, "mscale_all_dim": 0.707, "beta_fast": 32, "beta_slow": 1},  # DeepSeek-V2's mscales
        },
        tie_word_embeddings=False,
    )


def glm_config(common: dict, rope_parameters: dict | None):
    from transformers import Glm4MoeConfig

    rope = rope_parameters or {"rope_type": "default", "rope_theta": 1000000.0, "partial_rotary_factor": 0.5}
    common = dict(common)
    top_k = common.pop("num_experts_per_tok", 2)
    experts = dict(n_routed_experts=8, num_experts_per_tok=top_k, moe_intermediate_size=64, n_group=2, topk_group=1)
    return Glm4MoeConfig(
        **{**common, "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 2},
        **experts,
        n_shared_experts=1,
        first_k_dense_replace=1,
        routed_scaling_factor=2.5,
        norm_topk_prob=True,
        attention_bias=True,
        use_qk_norm=True,
        rope_parameters=rope,
        tie_word_embeddings=False,
    )


def tiny_config(architecture: str, rope_parameters: dict | None = None, **overrides):
    """The architecture's tiny config; `overrides` replace its sizes (heads, vocabulary, ...)."""
    from transformers import LlamaConfig, MixtralConfig, Qwen2Config, Qwen2MoeConfig, Qwen3Config, Qwen3MoeConfig

    common = dict(
        vocab_size=VOCAB_SIZE,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=64,
        max_position_embeddings=512,
        rms_norm_eps=1e-6,
        architectures=[architecture],
        dtype="float32",
    )
    common.update(overrides)
    if architecture in DEEPSEEK_ARCHITECTURES:
        return deepseek_config(architecture, common)
    if architecture == GLM_ARCHITECTURE:
        return glm_config(common, rope_parameters)
    if architecture == "LlamaForCausalLM":
        rope = rope_parameters or {"rope_type": "default", "rope_theta": 10000.0}
        return LlamaConfig(**common, tie_word_embeddings=False, rope_parameters=rope)
    if architecture == "MixtralForCausalLM":
        rope = rope_parameters or {"rope_type": "default", "rope_theta": 1000000.0}
        common.update(intermediate_size=64)  # each expert's
        return MixtralConfig(**common, num_local_experts=8, tie_word_embeddings=False, rope_parameters=rope)
    rope = rope_parameters or {"rope_type": "default", "rope_theta": 1000000.0}
    if architecture == "Qwen2MoeForCausalLM":
        experts = dict(num_experts=8, moe_intermediate_size=64, shared_expert_intermediate_size=96)
        experts.update(norm_topk_prob=False, mlp_only_layers=[2])
        return Qwen2MoeConfig(**common, **experts, tie_word_embeddings=False, rope_parameters=rope)
    if architecture == "Qwen2ForCausalLM":
        return Qwen2Config(**common, tie_word_embeddings=True, rope_parameters=rope)
    if architecture == "Qwen3MoeForCausalLM":
        experts = dict(num_experts=8, moe_intermediate_size=64, norm_topk_prob=True, mlp_only_layers=[0])
        return Qwen3MoeConfig(**common, **experts, tie_word_embeddings=False, rope_parameters=rope)
    return Qwen3Config(**common, tie_word_embeddings=False, rope_parameters=rope)


def save_tiny_model(
    architecture: str,
    target: Path,
    seed: int = 0,
    rope_parameters: dict | None = None,
    max_shard_size: str = "5GB",
    **overrides,
) -> Path:
    """Save a tiny checkpoint; a small `max_shard_size` splits it into shards with an index file, as large ones are."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    config = tiny_config(architecture, rope_parameters, **overrides)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.copy_(1.0 + 0.2 * torch.randn_like(param))
            else:
                param.copy_(0.15 * torch.randn_like(param))
        for name, buffer in model.named_buffers():
            if name.endswith("e_score_correction_bias"):  # DeepSeek-V3 chooses by score + bias: make it matter
                buffer.copy_(0.1 * torch.randn_like(buffer))
    model.save_pretrained(target, safe_serialization=True, max_shard_size=max_shard_size)
    return target


def save_compressed_tensors_w8a8(source: Path, target: Path) -> Path:
    """The checkpoint at `source` as an int8 W8A8 checkpoint in the compressed-tensors format, written by the
    compressed-tensors library the way llm-compressor's W8A8 recipe writes it: every decoder Linear layer's weight
    int8 with one min-max scale per output channel, activations int8 per token at run time, lm_head left in float.
    """
    import torch
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import QuantizationConfig, apply_quantization_config, preset_name_to_scheme
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    scheme = preset_name_to_scheme("W8A8", ["Linear"])
    apply_quantization_config(model, QuantizationConfig(config_groups={"group_0": scheme}, ignore=["lm_head"]))
    with torch.no_grad():  # what llm-compressor's calibration computes for weights: max |W| per row / 127
        for module in model.modules():
            if hasattr(module, "weight_scale"):
                module.weight_scale.copy_(module.weight.abs().amax(dim=1, keepdim=True) / 127)
    compressor = ModelCompressor.from_pretrained_model(model, quantization_format="int-quantized")
    compressor.compress_model(model)
    model.save_pretrained(target)
    compressor.update_config(target)
    return target
