"""Pay the engine's first-use costs before readiness turns true, not on a user's first request.

vLLM's sampler `torch.compile`s some of its helpers (ranking for logprobs): the first call compiles (5-20 s
measured here), and a second batch size recompiles them for dynamic shapes. vLLM's own runners warm their sampler
with dummy rows for the same reason. This runs one forward of the model and the sampler and prompt-logprobs paths
with every option the OpenAI API reaches (logprobs, penalties, seeds, top-k/top-p/min-p) at two batch sizes.
"""

import numpy as np
import torch
from vllm.sampling_params import SamplingParams
from vllm.v1.sample.sampler import Sampler

from vms_plugin.worker.batch import ScheduledRequest, build_step_batch
from vms_plugin.worker.sampling import BatchSampler, SamplingState

WARM_UP_ROWS = (1, 3)  # two shapes: torch.compile specialises the first and recompiles as dynamic on the second
WARM_UP_LOGPROBS = 5
PROMPT = [1, 2, 3, 4]


def warm_up_params() -> list[SamplingParams]:
    """One request per sampling path: greedy with logprobs, seeded random with penalties and every filter."""
    sampled = SamplingParams(
        temperature=0.8,
        top_p=0.9,
        top_k=20,
        min_p=0.05,
        seed=0,
        presence_penalty=0.5,
        frequency_penalty=0.5,
        repetition_penalty=1.2,
        logprobs=WARM_UP_LOGPROBS,
    )
    return [SamplingParams(temperature=0.0, logprobs=WARM_UP_LOGPROBS), sampled]


def warm_up_sampling(sampler: BatchSampler) -> None:
    for rows in WARM_UP_ROWS:
        for params in warm_up_params():
            states = [SamplingState.for_request(params, list(PROMPT), [5]) for _ in range(rows)]
            sampler.sample(torch.randn(rows, sampler.vocab_size), states)
        logprobs = Sampler.compute_logprobs(torch.randn(rows + len(PROMPT), sampler.vocab_size))
        targets = torch.zeros(rows + len(PROMPT), dtype=torch.int64)
        Sampler.gather_logprobs(logprobs, WARM_UP_LOGPROBS, targets)  # prompt logprobs' path
    sampler.forget_rows()


def warm_up_forward(forward, block_size: int) -> None:
    """A prefill and a decode step through `forward(batch, logits_index)`, writing only into the first KV blocks (no
    request owns one yet; vLLM's scheduler overwrites a block's slots before it reads them)."""
    blocks = list(range(-(-(len(PROMPT) + 1) // block_size)))
    for tokens, computed in ((list(PROMPT), 0), ([5], len(PROMPT))):
        batch = build_step_batch([ScheduledRequest(tokens, computed, blocks, True)], block_size)
        forward(batch, np.array(batch.logits_index, dtype=np.int32))
