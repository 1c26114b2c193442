"""Which logits rows a request asking for prompt logprobs needs in a step, worked out by hand."""

from vms_plugin.worker.prompt_logprobs import plan_chunk


def test_a_first_chunk_takes_a_row_for_every_token_it_runs() -> None:
    chunk = plan_chunk("a", prompt_len=10, num_computed=0, num_scheduled=4, query_start=3)
    assert (chunk.first_position, chunk.token_rows.tolist(), chunk.finishes_prompt) == (0, [3, 4, 5, 6], False)


def test_the_last_chunk_stops_before_the_last_prompt_token_and_finishes() -> None:
    # Positions 8 and 9 run; position 8 predicts prompt token 9, position 9 predicts the first output token.
    chunk = plan_chunk("a", prompt_len=10, num_computed=8, num_scheduled=2, query_start=0)
    assert (chunk.first_position, chunk.token_rows.tolist(), chunk.finishes_prompt) == (8, [0], True)


def test_a_chunk_of_only_the_last_prompt_token_has_no_rows_but_finishes() -> None:
    chunk = plan_chunk("a", prompt_len=10, num_computed=9, num_scheduled=1, query_start=5)
    assert (chunk.token_rows.tolist(), chunk.finishes_prompt) == ([], True)


def test_decode_steps_need_nothing() -> None:
    assert plan_chunk("a", prompt_len=10, num_computed=10, num_scheduled=1, query_start=0) is None
