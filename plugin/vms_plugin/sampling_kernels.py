"""Host implementations of vLLM sampling kernels whose CPU fallbacks in vLLM 0.32 are wrong.

vLLM writes its rejection sampler's helpers as Triton kernels and, without Triton, runs C++ stand-ins its CPU
platform registers. The stand-in of `expand_kernel` (one value per request spread over the request's draft
tokens) converts its output to int64 and never copies back, and truncates float inputs: the per-token temperature,
top-p and top-k of a speculative step come out as uninitialised memory, and sampled requests draw from NaN
probabilities. vms registers this one through the same registry, after vLLM's own.
"""

import logging

import torch


def expand_kernel(
    output_ptr: torch.Tensor,
    input_ptr: torch.Tensor,
    cu_num_tokens_ptr: torch.Tensor,
    replace_from: float,
    replace_to: float,
    MAX_NUM_TOKENS: int | None = None,
) -> None:
    """output[cu[i-1]:cu[i]] = input[i], with `replace_from` read as `replace_to` (a greedy row's temperature 0
    as 1)."""
    counts = torch.diff(cu_num_tokens_ptr.to(torch.int64), prepend=torch.zeros(1, dtype=torch.int64))
    values = torch.where(input_ptr == replace_from, torch.tensor(replace_to, dtype=input_ptr.dtype), input_ptr)
    output_ptr.copy_(torch.repeat_interleave(values, counts))


def register() -> None:
    from vllm.triton_utils.dispatcher import register_kernels

    # vLLM logs a warning when a registered kernel is registered again; replacing it is the point here.
    dispatcher_logger = logging.getLogger("vllm.triton_utils.dispatcher")
    level = dispatcher_logger.level
    dispatcher_logger.setLevel(logging.ERROR)
    try:
        register_kernels({"vllm.v1.sample.rejection_sampler.expand_kernel": expand_kernel})
    finally:
        dispatcher_logger.setLevel(level)
