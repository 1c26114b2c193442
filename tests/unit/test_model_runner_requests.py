"""The model runner's request bookkeeping across steps, driven by vLLM's own SchedulerOutput types.

No model is loaded: these steps only decide which tokens, positions and blocks each request runs.
"""

from types import SimpleNamespace

import pytest

from vms_plugin.worker.batch import ScheduledRequest


@pytest.fixture(scope="module")
def vllm_types():
    from vllm.sampling_params import SamplingParams
    from vllm.v1.core.sched.output import CachedRequestData, NewRequestData, SchedulerOutput

    return SimpleNamespace(
        SamplingParams=SamplingParams, Cached=CachedRequestData, New=NewRequestData, Output=SchedulerOutput
    )


@pytest.fixture
def runner():
    from vms_plugin.worker.model_runner import MindSporeModelRunner

    # The bookkeeping reads only the block size from vLLM's config.
    return MindSporeModelRunner(SimpleNamespace(cache_config=SimpleNamespace(block_size=4)))


def new_request(t, req_id: str, prompt: list[int], blocks: list[int]):
    return t.New(
        req_id=req_id,
        prompt_token_ids=prompt,
        mm_features=[],
        sampling_params=t.SamplingParams(temperature=0.0),
        pooling_params=None,
        block_ids=(blocks,),
        num_computed_tokens=0,
        lora_request=None,
    )


def step(t, scheduled: dict[str, int], new=(), cached=None, finished=()):
    cached = cached or t.Cached.make_empty()
    return t.Output(
        scheduled_new_reqs=list(new),
        scheduled_cached_reqs=cached,
        num_scheduled_tokens=scheduled,
        total_num_scheduled_tokens=sum(scheduled.values()),
        scheduled_spec_decode_tokens={},
        scheduled_encoder_inputs={},
        finished_req_ids=set(finished),
        free_encoder_mm_hashes=[],
    )


def cached(t, rows: list[tuple[str, int, int, list[int] | None]], resumed=()):
    """rows: (req_id, num_computed_tokens, num_output_tokens, new block ids or None)."""
    return t.Cached(
        req_ids=[row[0] for row in rows],
        resumed_req_ids=set(resumed),
        new_token_ids=[],
        all_token_ids={},
        new_block_ids=[None if row[3] is None else (row[3],) for row in rows],
        num_computed_tokens=[row[1] for row in rows],
        num_output_tokens=[row[2] for row in rows],
    )


def test_chunked_prefill_then_decode_feeds_the_right_tokens_and_blocks(vllm_types, runner) -> None:
    t = vllm_types
    prompt = list(range(100, 110))
    _, planned = runner.plan_step(step(t, {"a": 4}, new=[new_request(t, "a", prompt, [3, 5])]))
    assert planned == [ScheduledRequest(prompt[:4], 0, [3, 5], wants_logits=False)]

    _, planned = runner.plan_step(step(t, {"a": 6}, cached=cached(t, [("a", 4, 0, [9])])))
    assert planned == [ScheduledRequest(prompt[4:], 4, [3, 5, 9], wants_logits=True)]

    runner.requests["a"].output_token_ids.append(7)  # what sample_tokens records
    _, planned = runner.plan_step(step(t, {"a": 1}, cached=cached(t, [("a", 10, 1, None)])))
    assert planned == [ScheduledRequest([7], 10, [3, 5, 9], wants_logits=True)]


def test_resumed_request_replaces_its_blocks_and_recomputes_prompt_and_outputs(vllm_types, runner) -> None:
    t = vllm_types
    runner.plan_step(step(t, {"a": 3}, new=[new_request(t, "a", [1, 2, 3], [0])]))
    runner.requests["a"].output_token_ids += [4, 5]
    # Preempted after two outputs; resumed later in new blocks with nothing cached.
    _, planned = runner.plan_step(step(t, {"a": 5}, cached=cached(t, [("a", 0, 2, [6, 8])], resumed={"a"})))
    assert planned == [ScheduledRequest([1, 2, 3, 4, 5], 0, [6, 8], wants_logits=True)]


def test_outputs_the_scheduler_discarded_are_dropped(vllm_types, runner) -> None:
    t = vllm_types
    runner.plan_step(step(t, {"a": 2}, new=[new_request(t, "a", [1, 2], [0])]))
    runner.requests["a"].output_token_ids += [3, 4]
    _, planned = runner.plan_step(step(t, {"a": 1}, cached=cached(t, [("a", 2, 1, None)])))
    assert planned == [ScheduledRequest([3], 2, [0], wants_logits=True)]


def test_finished_requests_are_forgotten_and_mixed_steps_keep_scheduling_order(vllm_types, runner) -> None:
    t = vllm_types
    runner.plan_step(
        step(t, {"a": 2, "b": 3}, new=[new_request(t, "a", [1, 2], [0]), new_request(t, "b", [5, 6, 7], [1])])
    )
    runner.requests["a"].output_token_ids.append(9)
    runner.requests["b"].output_token_ids.append(8)
    req_ids, planned = runner.plan_step(
        step(
            t,
            {"c": 1, "b": 1},
            new=[new_request(t, "c", [4], [2])],
            cached=cached(t, [("b", 3, 1, None)]),
            finished={"a"},
        )
    )
    assert "a" not in runner.requests
    assert req_ids == ["c", "b"]
    assert planned == [ScheduledRequest([4], 0, [2], True), ScheduledRequest([8], 3, [1], True)]
