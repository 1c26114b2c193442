"""Structured output: vLLM's scheduler sends, per step, one xgrammar token bitmask row for each request whose
grammar constrains this step's token (JSON schema, regex, choice, grammar; `response_format` and tool calls in
the OpenAI API). Tokens the grammar forbids get -inf before vLLM's sampler runs, as vLLM's own runners do, so the
sampler, logprobs and the grammar's advance on the scheduler side all see the same constrained choice.
"""

import torch
import xgrammar
from vllm.v1.core.sched.output import GrammarOutput


def apply_grammar_bitmask(logits: torch.Tensor, row_req_ids: list[str], grammar_output: GrammarOutput) -> None:
    """Mask `logits` [rows, vocab] in place; row i belongs to request `row_req_ids[i]`.

    The bitmask's rows follow `grammar_output.structured_output_request_ids`, not the runner's row order, and
    cover only the structured requests; the others' rows are left as they are.
    """
    row_of = {req_id: row for row, req_id in enumerate(row_req_ids)}
    bitmask = torch.from_numpy(grammar_output.grammar_bitmask)
    if bitmask.shape[0] != len(grammar_output.structured_output_request_ids):
        raise ValueError(
            f"grammar bitmask has {bitmask.shape[0]} rows for "
            f"{len(grammar_output.structured_output_request_ids)} requests; speculative decoding is not supported"
        )
    rows, bitmask_rows = [], []
    for index, req_id in enumerate(grammar_output.structured_output_request_ids):
        if (row := row_of.get(req_id)) is not None:
            rows.append(row)
            bitmask_rows.append(index)
    if not rows:
        return
    aligned = torch.full((logits.shape[0], bitmask.shape[1]), -1, dtype=bitmask.dtype)  # -1: every token allowed
    aligned[rows] = bitmask[bitmask_rows]
    xgrammar.apply_token_bitmask_inplace(logits, aligned, indices=rows)
