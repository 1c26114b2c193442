"""Speculative decoding: each step verifies the tokens proposed for every request, and proposes the next ones.

The scheduler sends, per request, the proposed (draft) tokens it scheduled after the request's last token; the
model computes logits at the last token and at every draft in the same forward, and vLLM's `RejectionSampler`
keeps the longest prefix of drafts the target model agrees with plus one token of its own, so greedy output is
that of decoding without speculation and sampled output keeps its distribution. After sampling the runner
proposes the next drafts, which the engine core takes (`take_draft_token_ids`) for the next schedule.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from vllm.config import VllmConfig
from vllm.v1.spec_decode.metadata import SpecDecodeMetadata

from vms_plugin.worker.batch import concatenated_ranges


def spec_decode_metadata(drafts: Sequence[Sequence[int]]) -> SpecDecodeMetadata:
    """vLLM's description of a step's drafts for logits laid out 1 + len(drafts[i]) rows per request: the rows of
    the tokens before each draft (the targets), then the row after the last draft (the bonus)."""
    num_drafts = np.array([len(d) for d in drafts], dtype=np.int32)
    num_sampled = num_drafts + 1
    cu_sampled = np.cumsum(num_sampled, dtype=np.int32)
    targets = concatenated_ranges(cu_sampled - num_sampled, num_drafts)
    flat_drafts = [token for request in drafts for token in request]
    return SpecDecodeMetadata(
        draft_token_ids=torch.tensor(flat_drafts, dtype=torch.int32),
        num_draft_tokens=num_drafts.tolist(),
        cu_num_draft_tokens=torch.from_numpy(np.cumsum(num_drafts, dtype=np.int32)),
        cu_num_sampled_tokens=torch.from_numpy(cu_sampled),
        target_logits_indices=torch.from_numpy(targets),
        bonus_logits_indices=torch.from_numpy(cu_sampled - 1),
        logits_indices=torch.arange(int(cu_sampled[-1]), dtype=torch.int32),
    )


@dataclass(frozen=True)
class DraftRequest:
    """One request of a step as a drafter sees it once the step's tokens are kept."""

    token_ids: list[int]  # every token known now: prompt, outputs, the ones just kept
    num_computed: int  # tokens in the target's KV cache when the step began
    num_fed: int  # known tokens the target ran this step (proposed ones aside)
    block_ids: list[int]
    sampled: bool  # kept tokens this step, so wants proposals for the next


class Drafter(Protocol):
    def propose(self, requests: Sequence[DraftRequest]) -> list[list[int]]:
        """The next step's proposed tokens of each request (none for a request that did not sample)."""

    def attention_layers(self) -> list:
        """KV-cached layers of a draft model, beside the target's (none for prompt lookup)."""

    def warm_up(self) -> None: ...


class NgramDrafter:
    """Prompt lookup (`--speculative-config '{"method": "ngram", ...}'`): the tokens that followed the latest earlier
    occurrence of each request's last n tokens, found by vLLM's own `NgramProposer`."""

    def __init__(self, vllm_config: VllmConfig) -> None:
        # Imported here, as vLLM's runners do: it imports numba, and vLLM's start-up scan that installs its CPU
        # kernels over every loaded module's attributes fails on llvmlite's objects (vLLM 0.32).
        from vllm.v1.spec_decode.ngram_proposer import NgramProposer

        self.proposer = NgramProposer(vllm_config)
        self.num_tokens = vllm_config.speculative_config.num_speculative_tokens

    def propose(self, requests: Sequence[DraftRequest]) -> list[list[int]]:
        token_ids = [request.token_ids if request.sampled else [] for request in requests]
        lengths = np.array([len(tokens) for tokens in token_ids], dtype=np.int32)
        table = np.zeros((len(token_ids), max(int(lengths.max(initial=0)), 1)), dtype=np.int32)
        for row, tokens in enumerate(token_ids):
            table[row, : len(tokens)] = tokens
        wanted = [[0] if len(tokens) else [] for tokens in token_ids]  # the proposer skips requests with no sample
        return self.proposer.propose(self.num_tokens, wanted, lengths, table)

    def attention_layers(self) -> list:
        return []

    def warm_up(self) -> None:
        pass  # vLLM's proposer compiled its numba kernel when it was made


def make_drafter(vllm_config: VllmConfig, load_model: Callable[[Path], object]) -> Drafter | None:
    """The proposer of `--speculative-config`, or None without speculation; `load_model` builds a draft model."""
    from vms_plugin.worker.draft_model import DraftModelDrafter

    config = vllm_config.speculative_config
    if config is None:
        return None
    if config.method == "ngram":
        return NgramDrafter(vllm_config)
    if config.method == "draft_model":
        draft = load_model(Path(config.draft_model_config.model))
        return DraftModelDrafter(
            draft,
            config.num_speculative_tokens,
            vllm_config.cache_config.block_size,
            vllm_config.model_config.max_model_len,
        )
    raise ValueError(
        f"speculative decoding method {config.method!r} is not supported; vms proposes with 'ngram' and 'draft_model'"
    )
