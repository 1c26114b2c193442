"""Embeddings (`--runner pooling`): the model's final hidden states handed to vLLM's own pooler.

vLLM converts a decoder checkpoint into an embedding model with `--convert embed` (what `--runner pooling` picks
for one); its pooler config says how a request's hidden states become one vector (last token, mean or CLS, from
the model's sentence-transformers files or vLLM's defaults) and whether it is normalised. That pooler is vLLM's
`DispatchPooler` for embeddings, run here as vLLM's own runners run it, on the hidden states MindSpore computed
(handed over as torch tensors on the same memory), so its semantics are vLLM's to the last detail. A request's
vector is returned on the step its prompt is complete; chunked prefill works with last-token pooling, as in vLLM.
"""

import numpy as np
import torch
from vllm.config import VllmConfig, set_current_vllm_config
from vllm.pooling_params import PoolingParams
from vllm.v1.pool.metadata import PoolingMetadata, PoolingStates


class Pooling:
    def __init__(self, vllm_config: VllmConfig) -> None:
        from vllm.model_executor.layers.pooler import DispatchPooler

        with set_current_vllm_config(vllm_config):  # its activations are vLLM custom ops, which read the config
            self.pooler = DispatchPooler.for_embedding(vllm_config.model_config.pooler_config)
        self._states: dict[str, PoolingStates] = {}  # per request, across a prompt's chunks

    def supported_tasks(self) -> tuple[str, ...]:
        return tuple(sorted(self.pooler.get_supported_tasks()))

    def forget(self, req_id: str) -> None:
        self._states.pop(req_id, None)

    def outputs(
        self,
        hidden_states: torch.Tensor,
        req_ids: list[str],
        params: list[PoolingParams],
        prompts: list[list[int]],
        num_scheduled: np.ndarray,
        num_computed: np.ndarray,
    ) -> list[torch.Tensor | None]:
        """Each request's pooled vector, None for a request whose prompt is not complete yet; `hidden_states`
        [T, E] are the step's tokens in request order, `num_scheduled` and `num_computed` per request."""
        prompt_lens = torch.tensor([len(prompt) for prompt in prompts], dtype=torch.int64)
        token_ids = torch.zeros((len(prompts), int(prompt_lens.max())), dtype=torch.int64)
        for row, prompt in enumerate(prompts):
            token_ids[row, : len(prompt)] = torch.tensor(prompt, dtype=torch.int64)
        metadata = PoolingMetadata(
            prompt_lens=prompt_lens,
            prompt_token_ids=token_ids,
            prompt_token_ids_cpu=token_ids,
            pooling_params=params,
            pooling_states=[self._states.setdefault(req_id, PoolingStates()) for req_id in req_ids],
        )
        seq_lens = torch.from_numpy((num_computed + num_scheduled).astype(np.int64))
        metadata.build_pooling_cursor(num_scheduled.astype(np.int64), seq_lens, device=hidden_states.device)
        pooled = self.pooler(hidden_states=hidden_states, pooling_metadata=metadata)
        finished = metadata.get_pooling_cursor().get_finished_mask()
        return [vector if done else None for vector, done in zip(list(pooled), finished, strict=True)]
