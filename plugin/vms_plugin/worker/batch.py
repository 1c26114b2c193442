"""Turn one scheduler step into flat arrays for a single batched forward.

vLLM's scheduler hands us, per request, how many tokens to run this step and which KV blocks the request owns.
Prefill chunks and decode tokens of all requests are laid out back to back in one token axis, so the model runs
once per step whatever the mix. Everything here is plain numpy on the host: it is the only per-request Python
work of a step, and it is what the unit tests pin down by hand.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ScheduledRequest:
    """One request's share of a step: the tokens to run and where its KV lives."""

    token_ids: Sequence[int]  # the tokens fed this step, starting at position `num_computed`
    num_computed: int  # tokens of this request already in the KV cache
    block_ids: Sequence[int]  # vLLM's KV block ids for this request, in order
    wants_logits: bool  # False for a prefill chunk that does not reach the end of the prompt
    # Speculative decoding: the last `num_drafts` of `token_ids` are proposed tokens, each verified by the logits of
    # the token before it, so the request wants logits for its last 1 + num_drafts tokens.
    num_drafts: int = 0
    adapter_slot: int = -1  # the LoRA slot of the request's adapter (layers/lora.py); -1: the base model


@dataclass(frozen=True)
class StepBatch:
    """Flat per-token arrays plus the per-request context slots paged attention reads.

    T = total scheduled tokens, R = requests, B = most blocks of any request.
    """

    input_ids: np.ndarray  # [T] int32
    positions: np.ndarray  # [T] int32
    slot_mapping: np.ndarray  # [T] int32: block_id * block_size + offset, where each new K/V goes
    block_table: np.ndarray  # [R, B] int32, padded with block 0 (masked out by position)
    context_slots: np.ndarray  # [R, B * block_size] int32: cache slot of each context position of each request
    token_requests: np.ndarray  # [T] int32: the request (row of R) of each token
    query_starts: np.ndarray  # [R] int32: token index of each request's first token this step
    logits_index: np.ndarray  # [L] int32: token index of each logits row; 1 + drafts rows per sampling request
    sampling_rows: np.ndarray  # [S] int32: which request (row of R) samples, in order
    num_drafts: np.ndarray  # [S] int32: proposed tokens each sampling request verifies (its rows are 1 + these)
    adapter_slots: np.ndarray  # [R] int32: each request's LoRA slot, -1 for the base model


def build_step_batch(requests: Sequence[ScheduledRequest], block_size: int) -> StepBatch:
    """Lay the scheduled requests out for one forward pass (see StepBatch for the shapes)."""
    if not requests:
        raise ValueError("a step needs at least one scheduled request")
    lengths = np.array([len(r.token_ids) for r in requests], dtype=np.int32)
    if (lengths <= 0).any():
        raise ValueError("every scheduled request must run at least one token")
    num_tokens = int(lengths.sum())
    num_reqs = len(requests)
    max_blocks = max(len(r.block_ids) for r in requests)

    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int32)
    input_ids = np.fromiter((t for r in requests for t in r.token_ids), dtype=np.int32, count=num_tokens)
    req_of_token = np.repeat(np.arange(num_reqs, dtype=np.int32), lengths)
    offset_in_req = np.arange(num_tokens, dtype=np.int32) - starts[req_of_token]
    computed = np.array([r.num_computed for r in requests], dtype=np.int32)
    positions = computed[req_of_token] + offset_in_req

    block_table = np.zeros((num_reqs, max_blocks), dtype=np.int32)
    for row, request in enumerate(requests):
        block_table[row, : len(request.block_ids)] = request.block_ids
    needed_blocks = (computed + lengths + block_size - 1) // block_size
    owned_blocks = np.array([len(r.block_ids) for r in requests])
    if (needed_blocks > owned_blocks).any():
        row = int(np.argmax(needed_blocks > owned_blocks))
        raise ValueError(
            f"request {row} needs {needed_blocks[row]} KV blocks for {computed[row] + lengths[row]} tokens "
            f"but was given {owned_blocks[row]}"
        )
    slot_mapping = block_table[req_of_token, positions // block_size] * block_size + positions % block_size
    context_slots = (block_table[:, :, None] * block_size + np.arange(block_size, dtype=np.int32)).reshape(num_reqs, -1)

    sampling_rows = np.array([i for i, r in enumerate(requests) if r.wants_logits], dtype=np.int32)
    num_drafts = np.array([requests[row].num_drafts for row in sampling_rows], dtype=np.int32)
    logits_index = concatenated_ranges((starts + lengths)[sampling_rows] - num_drafts - 1, num_drafts + 1)
    return StepBatch(
        input_ids=input_ids,
        positions=positions.astype(np.int32),
        slot_mapping=slot_mapping.astype(np.int32),
        block_table=block_table,
        context_slots=context_slots.astype(np.int32),
        token_requests=req_of_token,
        query_starts=starts,
        logits_index=logits_index,
        sampling_rows=sampling_rows,
        num_drafts=num_drafts,
        adapter_slots=np.array([r.adapter_slot for r in requests], dtype=np.int32),
    )


def concatenated_ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """range(starts[0], starts[0] + counts[0]), then the next range, ... as one int32 array."""
    offsets = np.arange(int(counts.sum()), dtype=np.int32) - np.repeat(np.cumsum(counts) - counts, counts)
    return (np.repeat(starts, counts) + offsets).astype(np.int32)
