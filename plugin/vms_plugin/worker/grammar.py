"""Structured output: vLLM's scheduler sends, per step, xgrammar token bitmask rows for each request whose grammar
constrains this step's tokens (JSON schema, regex, choice, grammar; `response_format` and tool calls in the OpenAI
API): one row for the token sampled, plus one per proposed token under speculative decoding. Tokens the grammar
forbids get -inf before vLLM's sampler runs, as vLLM's own runners do, so the sampler, logprobs and the grammar's
advance on the scheduler side all see the same constrained choice.
"""

from collections.abc import Mapping

import torch
import xgrammar
from vllm.v1.core.sched.output import GrammarOutput


def apply_grammar_bitmask(
    logits: torch.Tensor,
    row_req_ids: list[str],
    grammar_output: GrammarOutput,
    num_drafts: Mapping[str, int] | None = None,
) -> None:
    """Mask `logits` [rows, vocab] in place; row i belongs to request `row_req_ids[i]`, whose 1 + num_drafts rows
    are consecutive (the token before each proposed token, then the last).

    The bitmask's rows follow `grammar_output.structured_output_request_ids`, not the runner's row order, and
    cover only the structured requests; the others' rows are left as they are.
    """
    num_drafts = num_drafts or {}
    first_row: dict[str, int] = {}
    for row, req_id in enumerate(row_req_ids):
        first_row.setdefault(req_id, row)
    bitmask = torch.from_numpy(grammar_output.grammar_bitmask)
    rows, bitmask_rows, bitmask_row = [], [], 0
    for req_id in grammar_output.structured_output_request_ids:
        count = 1 + num_drafts.get(req_id, 0)
        if (row := first_row.get(req_id)) is not None:
            rows.extend(range(row, row + count))
            bitmask_rows.extend(range(bitmask_row, bitmask_row + count))
        bitmask_row += count
    if bitmask.shape[0] != bitmask_row:
        raise ValueError(
            f"grammar bitmask has {bitmask.shape[0]} rows where the step's structured requests and their proposed "
            f"tokens make {bitmask_row}"
        )
    if not rows:
        return
    aligned = torch.full((logits.shape[0], bitmask.shape[1]), -1, dtype=bitmask.dtype)  # -1: every token allowed
    aligned[rows] = bitmask[bitmask_rows]
    xgrammar.apply_token_bitmask_inplace(logits, aligned, indices=rows)
