"""Greedy decoding in transformers, the reference the model and serving tests compare with: a plain argmax loop
through the KV cache (generate(min_new_tokens) would suppress EOS, unlike vLLM's ignore_eos)."""


def transformers_argmax(
    model_dir, prompts: list[list[int]], new_tokens: int, dtype: str = "float32"
) -> list[list[int]]:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype)).eval()
    return transformers_argmax_of(model, prompts, new_tokens)


def transformers_argmax_of(model, prompts: list[list[int]], new_tokens: int) -> list[list[int]]:
    import torch

    results = []
    with torch.no_grad():
        for ids in prompts:
            out = model(torch.tensor([ids]), use_cache=True)
            generated = []
            for _ in range(new_tokens):
                next_id = int(out.logits[0, -1].argmax())
                generated.append(next_id)
                out = model(torch.tensor([[next_id]]), past_key_values=out.past_key_values, use_cache=True)
            results.append(generated)
    return results
