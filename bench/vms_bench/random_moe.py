"""A random mixture-of-experts checkpoint for `vms bench --random-moe`: the MoE path measured with the same harness.

No MoE model ships with vms and nothing is downloaded at run time, so the harness makes one: a Qwen3-MoE of ~260M
parameters (12 layers, 16 experts of 384 features, top 4, ~100M active per token), random weights in bfloat16,
with the default model's tokenizer and vocabulary so the workload's prompts are real text. Throughput depends on
the shapes, not the values. Made once into the model cache.
"""

import shutil
from pathlib import Path

from vms_supervisor.default_model import model_cache_dir, prepare_default_model

NAME = "random-Qwen3-MoE-260M"
SIZES = dict(
    hidden_size=768,
    intermediate_size=2048,  # a dense layer's (none: every layer is routed)
    num_hidden_layers=12,
    num_attention_heads=12,
    num_key_value_heads=4,
    head_dim=64,
    num_experts=16,
    num_experts_per_tok=4,
    moe_intermediate_size=384,
    norm_topk_prob=True,
    max_position_embeddings=4096,
    tie_word_embeddings=False,
)


def prepare_random_moe() -> Path:
    """The checkpoint's directory, made on first use."""
    target = model_cache_dir() / NAME
    if (target / "config.json").is_file():
        return target
    import torch
    from transformers import AutoTokenizer, Qwen3MoeConfig, Qwen3MoeForCausalLM

    tokenizer_dir = prepare_default_model()
    vocab = len(AutoTokenizer.from_pretrained(tokenizer_dir))
    torch.manual_seed(0)
    config = Qwen3MoeConfig(vocab_size=vocab, architectures=["Qwen3MoeForCausalLM"], **SIZES)
    model = Qwen3MoeForCausalLM(config).to(torch.bfloat16)
    staging = target.with_name(f".{NAME}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    for source in tokenizer_dir.iterdir():
        if source.name.startswith(("tokenizer", "special_tokens", "chat_template")):
            shutil.copy(source, staging / source.name)
    staging.rename(target)
    return target
