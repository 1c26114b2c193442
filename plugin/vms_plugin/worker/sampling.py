"""Next-token sampling with vLLM's own `Sampler` on the logits MindSpore computed.

vLLM's sampler implements every `SamplingParams` option the OpenAI API exposes (temperature, top-p/top-k, min-p,
seeds, penalties, logit bias, allowed tokens, min_tokens, logprobs), so the plugin hands it the logits (zero-copy
through DLPack) with a `SamplingMetadata` for this step's sampling rows, the job vLLM's `InputBatch` does for its
own runners. Rows change every step, so the metadata and the logits processors' view of the batch are rebuilt
from the runner's request states each time: a few small tensors, no per-token work in Python. Under speculative
decoding a request's proposed tokens are verified by vLLM's `RejectionSampler` around the same `Sampler`.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch
from vllm.config import VllmConfig
from vllm.sampling_params import SamplingParams, SamplingType
from vllm.v1.outputs import LogprobsLists
from vllm.v1.sample.logits_processor import BatchUpdate, build_logitsprocs
from vllm.v1.sample.metadata import SamplingMetadata
from vllm.v1.sample.rejection_sampler import RejectionSampler
from vllm.v1.sample.sampler import Sampler

from vms_plugin.worker.speculative import spec_decode_metadata


@dataclass
class SamplingState:
    """What sampling needs to know of one request; `output_token_ids` is the runner's live list."""

    params: SamplingParams
    prompt_token_ids: list[int]
    output_token_ids: list[int]
    generator: torch.Generator | None = field(default=None)

    @classmethod
    def for_request(cls, params: SamplingParams, prompt: list[int], outputs: list[int]) -> "SamplingState":
        generator = None
        if params.seed is not None:  # a seeded request draws from its own stream, reproducible per request
            generator = torch.Generator()
            generator.manual_seed(params.seed)
        return cls(params, prompt, outputs, generator)


class BatchSampler:
    def __init__(self, vllm_config: VllmConfig) -> None:
        model_config = vllm_config.model_config
        self.vocab_size = model_config.get_vocab_size()
        self.sampler = Sampler(logprobs_mode=model_config.logprobs_mode, use_fp64_gumbel=model_config.use_fp64_gumbel)
        self.rejection_sampler = RejectionSampler(self.sampler, vllm_config.speculative_config)
        self.logitsprocs = build_logitsprocs(
            vllm_config, torch.device("cpu"), False, False, model_config.logits_processors or ()
        )
        self._rows_last_step: list[SamplingState] = []

    def sample(
        self, logits: torch.Tensor, rows: Sequence[SamplingState], drafts: Sequence[Sequence[int]] | None = None
    ) -> tuple[list[list[int]], LogprobsLists | None]:
        """The tokens each request keeps, and their logprobs if asked (indexed by request through
        `cu_num_generated_tokens`). Without drafts `logits` is [S, vocab], row i belonging to `rows[i]`, which gets
        one token; with drafts, request i has 1 + len(drafts[i]) consecutive rows and keeps the drafts the model
        agrees with plus one token of its own."""
        self._update_logits_processors(rows)
        metadata = self._metadata(rows)
        if drafts is None:
            output = self.sampler(logits, metadata)
        else:
            metadata = replace(metadata, spec_token_ids=[list(d) for d in drafts])
            output = self.rejection_sampler(spec_decode_metadata(drafts), None, logits, metadata)
        return RejectionSampler.parse_output(
            output.sampled_token_ids, self.vocab_size, logprobs_tensors=output.logprobs_tensors
        )

    def forget_rows(self) -> None:
        """Drop every row from the logits processors' view of the batch (a warm-up's dummy rows)."""
        self._update_logits_processors([])

    def _update_logits_processors(self, rows: Sequence[SamplingState]) -> None:
        """Every row is added again when the rows changed; a step with the same rows in the same order (most
        decode steps) is no update, as vLLM's own batch reports it: the processors hold each row's live output
        list."""
        last, update = self._rows_last_step, None
        if len(rows) != len(last) or any(a is not b for a, b in zip(rows, last, strict=True)):
            added = [(index, row.params, row.prompt_token_ids, row.output_token_ids) for index, row in enumerate(rows)]
            removed = list(range(len(rows), len(last)))
            update = BatchUpdate(batch_size=len(rows), removed=removed, added=added, moved=[])
        self._rows_last_step = list(rows)
        for processor in self.logitsprocs.all:
            processor.update_state(update)

    def _metadata(self, rows: Sequence[SamplingState]) -> SamplingMetadata:
        params = [row.params for row in rows]
        greedy = [p.sampling_type == SamplingType.GREEDY for p in params]
        top_k = [p.top_k if 0 < p.top_k < self.vocab_size else self.vocab_size for p in params]
        no_penalties = all(
            p.frequency_penalty == 0.0 and p.presence_penalty == 0.0 and p.repetition_penalty == 1.0 for p in params
        )
        logprobs = [self.vocab_size if p.logprobs == -1 else p.logprobs for p in params if p.logprobs is not None]
        return SamplingMetadata(
            temperature=None
            if all(greedy)
            else _floats([0.0 if g else p.temperature for g, p in zip(greedy, params, strict=True)]),
            all_greedy=all(greedy),
            all_random=not any(greedy),
            top_p=None if all(p.top_p >= 1.0 for p in params) else _floats([p.top_p for p in params]),
            top_k=None if all(k == self.vocab_size for k in top_k) else torch.tensor(top_k, dtype=torch.int32),
            generators={index: row.generator for index, row in enumerate(rows) if row.generator is not None},
            max_num_logprobs=max(logprobs) if logprobs else None,
            no_penalties=no_penalties,
            prompt_token_ids=None if no_penalties else self._padded_prompts(rows),
            frequency_penalties=_floats([p.frequency_penalty for p in params]),
            presence_penalties=_floats([p.presence_penalty for p in params]),
            repetition_penalties=_floats([p.repetition_penalty for p in params]),
            output_token_ids=[row.output_token_ids for row in rows],
            allowed_token_ids_mask=self._allowed_token_ids_mask(params),
            bad_words_token_ids={i: p.bad_words_token_ids for i, p in enumerate(params) if p.bad_words_token_ids},
            logitsprocs=self.logitsprocs,
        )

    def _padded_prompts(self, rows: Sequence[SamplingState]) -> torch.Tensor:
        """Prompt ids per row, padded with vocab_size (an id no token has), as penalties expect."""
        width = max(len(row.prompt_token_ids) for row in rows)
        padded = torch.full((len(rows), width), self.vocab_size, dtype=torch.int64)
        for index, row in enumerate(rows):
            padded[index, : len(row.prompt_token_ids)] = torch.tensor(row.prompt_token_ids, dtype=torch.int64)
        return padded

    def _allowed_token_ids_mask(self, params: Sequence[SamplingParams]) -> torch.Tensor | None:
        """True where a token is NOT allowed, only for rows that restrict their vocabulary."""
        if not any(p.allowed_token_ids for p in params):
            return None
        mask = torch.zeros((len(params), self.vocab_size), dtype=torch.bool)
        for index, p in enumerate(params):
            if p.allowed_token_ids:
                mask[index] = True
                mask[index, p.allowed_token_ids] = False
        return mask


def _floats(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)
