"""LoRA adapters made with PEFT for the tests: random, non-zero A and B on a model's attention and MLP
projections, saved in PEFT's checkpoint format (adapter_config.json, adapter_model.safetensors)."""

from pathlib import Path

ATTENTION_AND_MLP = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def make_adapter(
    model_dir: Path,
    out_dir: Path,
    seed: int,
    rank: int = 8,
    alpha: int = 16,
    targets: tuple[str, ...] = ATTENTION_AND_MLP,
    spread: float = 0.05,
    use_rslora: bool = False,
) -> Path:
    """An adapter of `rank` on `targets` whose A and B are drawn from N(0, spread^2) with `seed` (PEFT starts B at
    zero, which would make the adapter the base model): large enough to change greedy tokens, small enough to keep
    the text a language model's."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = LoraConfig(
        r=rank, lora_alpha=alpha, target_modules=list(targets), lora_dropout=0.0, bias="none", use_rslora=use_rslora
    )
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_" in name:
                parameter.normal_(0.0, spread)
    peft_model.save_pretrained(out_dir)
    return out_dir
