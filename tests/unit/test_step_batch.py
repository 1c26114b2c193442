"""Batch building for one scheduler step, checked against layouts worked out by hand (block_size 4)."""

import numpy as np
import pytest

from vms_plugin.worker.batch import ScheduledRequest, build_step_batch


def test_mixed_prefill_and_decode_flatten_into_one_token_axis() -> None:
    # Request A: a fresh 5-token prompt in blocks [7, 2]. Request B: decoding its 7th token (6 cached) in [3, 9].
    prefill = ScheduledRequest(token_ids=[11, 12, 13, 14, 15], num_computed=0, block_ids=[7, 2], wants_logits=True)
    decode = ScheduledRequest(token_ids=[21], num_computed=6, block_ids=[3, 9], wants_logits=True)
    batch = build_step_batch([prefill, decode], block_size=4)

    np.testing.assert_array_equal(batch.input_ids, [11, 12, 13, 14, 15, 21])
    np.testing.assert_array_equal(batch.positions, [0, 1, 2, 3, 4, 6])
    # A: positions 0-3 in block 7 (slots 28-31), position 4 in block 2 (slot 8). B: position 6 -> block 9, offset 2.
    np.testing.assert_array_equal(batch.slot_mapping, [28, 29, 30, 31, 8, 38])
    np.testing.assert_array_equal(batch.block_table, [[7, 2], [3, 9]])
    np.testing.assert_array_equal(batch.token_requests, [0, 0, 0, 0, 0, 1])
    np.testing.assert_array_equal(batch.logits_index, [4, 5])
    np.testing.assert_array_equal(batch.sampling_rows, [0, 1])


def test_a_request_verifying_drafts_wants_logits_at_its_last_token_and_at_each_draft() -> None:
    # A: decode of token 31 after 5 cached, then drafts 32, 33 (3 tokens, logits rows 0-2). B: plain decode (row 3).
    # C: a prefill chunk that does not finish its prompt: no rows. D: drafts 41 after token 40 (rows 4-5).
    verify = ScheduledRequest([31, 32, 33], num_computed=5, block_ids=[1, 2], wants_logits=True, num_drafts=2)
    decode = ScheduledRequest([21], num_computed=3, block_ids=[3], wants_logits=True)
    chunk = ScheduledRequest([5, 6], num_computed=0, block_ids=[4], wants_logits=False)
    verify_one = ScheduledRequest([40, 41], num_computed=1, block_ids=[5], wants_logits=True, num_drafts=1)
    batch = build_step_batch([verify, decode, chunk, verify_one], block_size=4)

    np.testing.assert_array_equal(batch.positions, [5, 6, 7, 3, 0, 1, 1, 2])
    np.testing.assert_array_equal(batch.logits_index, [0, 1, 2, 3, 6, 7])
    np.testing.assert_array_equal(batch.sampling_rows, [0, 1, 3])
    np.testing.assert_array_equal(batch.num_drafts, [2, 0, 1])


def test_partial_prefill_chunk_does_not_sample_and_continues_at_its_position() -> None:
    # A: second chunk of a long prompt (4 done, 3 more, prompt not finished). B: decode at position 2.
    chunk = ScheduledRequest(token_ids=[5, 6, 7], num_computed=4, block_ids=[1, 4], wants_logits=False)
    decode = ScheduledRequest(token_ids=[9], num_computed=2, block_ids=[6], wants_logits=True)
    batch = build_step_batch([decode, chunk], block_size=4)

    np.testing.assert_array_equal(batch.positions, [2, 4, 5, 6])
    np.testing.assert_array_equal(batch.slot_mapping, [26, 16, 17, 18])
    np.testing.assert_array_equal(batch.block_table, [[6, 0], [1, 4]])
    np.testing.assert_array_equal(batch.token_requests, [0, 1, 1, 1])
    # Context rows: block 6 -> slots 24-27, then padding block 0; blocks 1 and 4 -> slots 4-7 and 16-19.
    np.testing.assert_array_equal(batch.context_slots, [[24, 25, 26, 27, 0, 1, 2, 3], [4, 5, 6, 7, 16, 17, 18, 19]])
    np.testing.assert_array_equal(batch.logits_index, [0])
    np.testing.assert_array_equal(batch.sampling_rows, [0])


def test_request_with_too_few_blocks_is_refused_with_the_numbers() -> None:
    short = ScheduledRequest(token_ids=[1, 2, 3, 4, 5], num_computed=0, block_ids=[0], wants_logits=True)
    with pytest.raises(ValueError, match="needs 2 KV blocks for 5 tokens but was given 1"):
        build_step_batch([short], block_size=4)
