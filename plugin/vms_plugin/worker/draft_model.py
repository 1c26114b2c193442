"""Speculative decoding with a draft model (`--speculative-config '{"method": "draft_model", "model": ...}'`): a
smaller model of the same vocabulary proposes the next k tokens of every request, greedily, one token a forward.

The draft model keeps a KV cache of its own in the same blocks as the target's (vLLM sizes both: the worker
declares the draft's layers beside the target's, one block table for all). Each step it runs the tokens the
target ran (prefill chunks included, so that a block the prefix cache shares holds the draft's KV too) with the
tokens just kept, then k - 1 single-token steps on its own proposals. The scheduler reserves k slots past each
request's scheduled tokens for those proposals (vLLM's num_lookahead_tokens).
"""

from collections.abc import Sequence

import numpy as np

from vms_plugin.worker.batch import ScheduledRequest, build_step_batch
from vms_plugin.worker.forward import step_logits
from vms_plugin.worker.speculative import DraftRequest
from vms_plugin.worker.warm_up import warm_up_forward


class DraftModelDrafter:
    def __init__(self, model, num_tokens: int, block_size: int, max_model_len: int) -> None:
        self.model = model
        self.num_tokens = num_tokens
        self.block_size = block_size
        self.max_model_len = max_model_len

    def attention_layers(self) -> list:
        return self.model.attention_layers()

    def warm_up(self) -> None:
        warm_up_forward(lambda batch, logits_index: step_logits(self.model, batch, logits_index), self.block_size)

    def propose(self, requests: Sequence[DraftRequest]) -> list[list[int]]:
        """k greedy proposals for each request that sampled (fewer near the end of the model's length or of the
        request's KV blocks), none for the others."""
        fed = [self._catch_up(request) for request in requests]
        batch = build_step_batch(fed, self.block_size)
        drafts: list[list[int]] = [[] for _ in requests]
        rows = [int(row) for row in batch.sampling_rows]
        for row, token in zip(rows, self._greedy(batch), strict=True):
            drafts[row].append(token)
        for step in range(1, self.num_tokens):
            rows = [row for row in rows if step < self._room(requests[row])]
            if not rows:
                break
            decodes = [self._decode(requests[row], drafts[row][-1], step) for row in rows]
            for row, token in zip(rows, self._greedy(build_step_batch(decodes, self.block_size)), strict=True):
                drafts[row].append(token)
        return [d[: self._room(request)] for d, request in zip(drafts, requests, strict=True)]

    def _catch_up(self, request: DraftRequest) -> ScheduledRequest:
        """The tokens the target ran this step (with those just kept, for a request that sampled) into the draft's
        cache; logits at the last for a request that wants proposals."""
        known = len(request.token_ids) if request.sampled else request.num_computed + request.num_fed
        end = min(known, len(request.block_ids) * self.block_size)
        return ScheduledRequest(
            token_ids=request.token_ids[request.num_computed : end],
            num_computed=request.num_computed,
            block_ids=request.block_ids,
            wants_logits=request.sampled and end == known,
        )

    def _decode(self, request: DraftRequest, token: int, step: int) -> ScheduledRequest:
        """The draft's proposal number `step` run to propose the next one."""
        return ScheduledRequest([token], len(request.token_ids) + step - 1, request.block_ids, True)

    def _room(self, request: DraftRequest) -> int:
        """How many proposals fit: before the model's length ends and within the KV slots the request owns (the
        k-th proposal is not run through the draft, so it needs no slot)."""
        length = len(request.token_ids)
        slots = len(request.block_ids) * self.block_size
        return max(0, min(self.num_tokens, self.max_model_len - length, slots - length + 1))

    def _greedy(self, batch) -> list[int]:
        """The draft's argmax at the batch's logits rows (none when no request wants proposals; the forward still
        writes the batch's tokens into the draft's cache)."""
        logits = step_logits(self.model, batch, batch.logits_index)
        tokens = np.asarray(logits.argmax(axis=-1).asnumpy()).astype(int).tolist()
        return tokens[: len(batch.logits_index)]
