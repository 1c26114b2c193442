"""The KV cache budget check speaks in blocks and says what to change."""

import pytest

from vms_plugin.worker.kv_budget import check_fits_one_sequence

MIB = 1 << 20


def test_budget_that_holds_a_full_length_sequence_returns_its_block_count() -> None:
    assert check_fits_one_sequence(16 * MIB, MIB, block_size=128, max_model_len=2048) == 16


def test_budget_one_block_short_names_blocks_needed_and_the_knobs() -> None:
    with pytest.raises(ValueError) as error:
        check_fits_one_sequence(15 * MIB, MIB, block_size=128, max_model_len=2048)
    message = str(error.value)
    assert "holds 15 blocks of 128 tokens" in message
    assert "max_model_len 2048 needs 16 blocks" in message
    assert "--kv-cache-memory-bytes" in message and "--max-model-len" in message


def test_partial_last_block_still_needs_a_whole_block() -> None:
    with pytest.raises(ValueError, match="needs 3 blocks"):
        check_fits_one_sequence(2 * MIB, MIB, block_size=16, max_model_len=33)


def test_negative_budget_is_reported_as_zero_blocks() -> None:
    with pytest.raises(ValueError, match="holds 0 blocks"):
        check_fits_one_sequence(-5, MIB, block_size=16, max_model_len=16)
