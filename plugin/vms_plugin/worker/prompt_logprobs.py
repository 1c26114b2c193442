"""Prompt logprobs (`SamplingParams.prompt_logprobs`): each prompt token's logprob given the tokens before it.

Done the way vLLM's own GPU runner does it: while a prompt is prefilled (in one step or in chunks) the forward also
returns logits for that request's prompt positions; vLLM's `Sampler.compute_logprobs` / `gather_logprobs` turn
them into top-k values and ranks, accumulated per request and handed to vLLM in the step that finishes the prompt.
Rare and prefill-only, so a plain loop over the requests that asked is fine here.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from vllm.v1.outputs import LogprobsTensors
from vllm.v1.sample.sampler import Sampler


@dataclass(frozen=True)
class PromptLogprobsChunk:
    """One request's prompt positions whose logits this step computes."""

    req_id: str
    first_position: int  # prompt position of the first logits row (it predicts the token after it)
    token_rows: np.ndarray  # [n] int32: token index of each of those positions in the step's flat batch
    finishes_prompt: bool  # this step runs the prompt's last token: hand the result to vLLM now


def plan_chunk(
    req_id: str, prompt_len: int, num_computed: int, num_scheduled: int, query_start: int
) -> PromptLogprobsChunk | None:
    """The chunk of a request that wants prompt logprobs, or None once its prompt is behind it."""
    if num_computed >= prompt_len:
        return None
    # The last prompt token predicts the first output token: that one is a sampled logprob, not a prompt one.
    count = max(0, min(num_scheduled, prompt_len - 1 - num_computed))
    rows = np.arange(query_start, query_start + count, dtype=np.int32)
    return PromptLogprobsChunk(req_id, num_computed, rows, num_computed + num_scheduled >= prompt_len)


class PromptLogprobsCollector:
    def __init__(self, logprobs_mode: str) -> None:
        self.raw = logprobs_mode in ("raw_logits", "processed_logits")
        self.in_progress: dict[str, LogprobsTensors] = {}

    def collect(
        self,
        chunks: Sequence[PromptLogprobsChunk],
        logits: torch.Tensor,
        prompts: dict[str, list[int]],
        num_logprobs: dict[str, int],
    ) -> dict[str, LogprobsTensors | None]:
        """Fill each chunk's rows (consecutive in `logits`, chunk after chunk); return the finished prompts."""
        finished: dict[str, LogprobsTensors | None] = {}
        row = 0
        for chunk in chunks:
            prompt = prompts[chunk.req_id]
            tensors = self.in_progress.get(chunk.req_id)
            if tensors is None:
                tensors = LogprobsTensors.empty_cpu(len(prompt) - 1, num_logprobs[chunk.req_id] + 1)
                self.in_progress[chunk.req_id] = tensors
            count = len(chunk.token_rows)
            if count:
                scores = logits[row : row + count].float()
                scores = scores if self.raw else Sampler.compute_logprobs(scores)
                start = chunk.first_position
                targets = torch.tensor(prompt[start + 1 : start + 1 + count], dtype=torch.int64)
                token_ids, values, ranks, *_ = Sampler.gather_logprobs(scores, num_logprobs[chunk.req_id], targets)
                tensors.logprob_token_ids[start : start + count] = token_ids
                tensors.logprobs[start : start + count] = values
                tensors.selected_token_ranks[start : start + count] = ranks
                row += count
            if chunk.finishes_prompt:
                finished[chunk.req_id] = self.in_progress.pop(chunk.req_id)
        return finished

    def forget(self, req_id: str) -> None:
        """A finished or aborted request drops its half-filled result."""
        self.in_progress.pop(req_id, None)
