"""vms's models run directly, without vLLM: batched steps through the paged KV cache, as the model runner drives
them. The model tests compare what these return with transformers."""

import numpy as np

BLOCK_SIZE = 16
GREEDY_PROMPTS, GREEDY_TOKENS = 8, 32  # the default model's greedy comparisons: the serving tests' prompts


def mindspore_step(model, requests):
    """Logits for every token of one batched step."""
    from mindspore import Tensor

    from vms_plugin.ops import layer_ops
    from vms_plugin.worker.batch import build_step_batch

    batch = build_step_batch(requests, BLOCK_SIZE)
    inputs = layer_ops().attention_inputs(batch)
    every_token = Tensor(np.arange(len(batch.input_ids), dtype=np.int32))
    return model(Tensor(batch.input_ids), inputs, every_token).asnumpy()


def logits_of(model_dir, dtype: str, prompt: list[int], int8=None) -> np.ndarray:
    """vms's logits for every position of `prompt`, weights stored as `dtype` (int8 with an `int8` scheme)."""
    from vms_plugin.models.registry import build_model
    from vms_plugin.worker.batch import ScheduledRequest

    model = build_model(model_dir, dtype, int8)
    blocks = list(range(-(-len(prompt) // BLOCK_SIZE)))
    for attention in model.attention_layers():
        attention.allocate_kv_cache(len(blocks), BLOCK_SIZE)
    return mindspore_step(model, [ScheduledRequest(prompt, 0, blocks, True)])


def greedy(model_dir, dtype: str, prompts: list[list[int]], new_tokens: int, int8=None) -> list[list[int]]:
    """Argmax decoding of all prompts as one batch through the paged KV cache: prefill, then one token a step."""
    from vms_plugin.models.registry import build_model
    from vms_plugin.worker.batch import ScheduledRequest

    model = build_model(model_dir, dtype, int8)
    per_request = -(-(max(map(len, prompts)) + new_tokens) // BLOCK_SIZE)
    for attention in model.attention_layers():
        attention.allocate_kv_cache(per_request * len(prompts), BLOCK_SIZE)
    blocks = [list(range(r * per_request, (r + 1) * per_request)) for r in range(len(prompts))]
    step = [ScheduledRequest(p, 0, b, True) for p, b in zip(prompts, blocks, strict=True)]
    outputs: list[list[int]] = [[] for _ in prompts]
    ends = np.cumsum([len(p) for p in prompts]) - 1
    logits = mindspore_step(model, step)[ends]
    for _ in range(new_tokens):
        for output, row in zip(outputs, logits, strict=True):
            output.append(int(row.argmax()))
        lengths = [len(p) + len(o) - 1 for p, o in zip(prompts, outputs, strict=True)]
        step = [ScheduledRequest([o[-1]], n, b, True) for o, n, b in zip(outputs, lengths, blocks, strict=True)]
        logits = mindspore_step(model, step)
    return outputs


def first_differences(expected: list[list[int]], actual: list[list[int]]) -> list[int | None]:
    """Per prompt, the position of the first token that differs (None: identical)."""
    return [
        next((i for i, (a, b) in enumerate(zip(x, y, strict=True)) if a != b), None)
        for x, y in zip(expected, actual, strict=True)
    ]
