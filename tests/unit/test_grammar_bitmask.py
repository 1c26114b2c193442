"""The grammar bitmask reaches the right rows: vLLM orders it by structured request, the runner by its batch."""

import numpy as np
import pytest
import torch
from vllm.v1.core.sched.output import GrammarOutput

from vms_plugin.worker.grammar import apply_grammar_bitmask

VOCAB = 70  # three 32-bit words, the last one partly used


def allowing(*token_ids: int) -> np.ndarray:
    """One bitmask row (xgrammar's layout: bit j % 32 of word j // 32 set = token j allowed)."""
    row = np.zeros(-(-VOCAB // 32), dtype=np.uint32)
    for token in token_ids:
        row[token // 32] |= np.uint32(1 << (token % 32))
    return row.view(np.int32)


def allowed_tokens(logits: torch.Tensor) -> list[list[int]]:
    return [torch.nonzero(torch.isfinite(row)).flatten().tolist() for row in logits]


def test_each_structured_row_keeps_only_its_grammar_tokens_and_the_others_are_untouched() -> None:
    logits = torch.randn(4, VOCAB)
    original = logits.clone()
    grammar = GrammarOutput(
        # not in the runner's order, and "gone" has no row this step
        structured_output_request_ids=["c", "gone", "a"],
        grammar_bitmask=np.stack([allowing(5, 69), allowing(1), allowing(0, 31, 32, 64)]),
    )
    apply_grammar_bitmask(logits, ["a", "b", "c", "d"], grammar)
    assert allowed_tokens(logits) == [[0, 31, 32, 64], list(range(VOCAB)), [5, 69], list(range(VOCAB))]
    finite = torch.isfinite(logits)
    assert torch.equal(logits[finite], original[finite])  # allowed logits keep their values


def test_a_step_without_structured_rows_changes_nothing() -> None:
    logits = torch.randn(2, VOCAB)
    original = logits.clone()
    apply_grammar_bitmask(logits, ["a", "b"], GrammarOutput(["gone"], np.stack([allowing(1)])))
    assert torch.equal(logits, original)


def test_each_proposed_token_gets_its_own_row_of_the_bitmask() -> None:
    # "b" verifies two proposed tokens: three rows of logits and of its bitmask; "a" has no drafts
    logits = torch.randn(4, VOCAB)
    grammar = GrammarOutput(["b", "a"], np.stack([allowing(1), allowing(2), allowing(3), allowing(4)]))
    apply_grammar_bitmask(logits, ["a", "b", "b", "b"], grammar, num_drafts={"b": 2})
    assert allowed_tokens(logits) == [[4], [1], [2], [3]]


def test_a_bitmask_that_does_not_match_the_drafts_is_refused_with_the_counts() -> None:
    grammar = GrammarOutput(["a"], np.stack([allowing(1), allowing(2)]))  # two rows: a token plus one draft
    with pytest.raises(
        ValueError, match="has 2 rows where the step's structured requests and their proposed tokens make 1"
    ):
        apply_grammar_bitmask(torch.randn(1, VOCAB), ["a"], grammar)
