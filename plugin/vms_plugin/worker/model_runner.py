"""Runs one scheduler step on the MindSpore model: request bookkeeping, one batched forward, sampling.

vLLM sends only what changed since the last step (new requests, new blocks, finished ids), so the runner keeps
each live request's tokens and block ids. It also remembers the tokens it sampled: the scheduler sends them back
only for pipeline parallelism.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import mindspore as ms
import numpy as np
import torch
from mindspore import Tensor
from vllm.config import ParallelConfig, VllmConfig
from vllm.distributed import get_tensor_model_parallel_rank, get_tensor_model_parallel_world_size
from vllm.lora.request import LoRARequest
from vllm.pooling_params import PoolingParams
from vllm.v1.core.sched.output import GrammarOutput, SchedulerOutput
from vllm.v1.outputs import EMPTY_MODEL_RUNNER_OUTPUT, DraftTokenIds, LogprobsTensors, ModelRunnerOutput

from vms_plugin.layers.parallel import HcclGroup, SingleRank, TensorParallelGroup
from vms_plugin.models.registry import build_model
from vms_plugin.ops import layer_ops
from vms_plugin.quantization import model_int8_scheme
from vms_plugin.worker.batch import ScheduledRequest, StepBatch, build_step_batch
from vms_plugin.worker.device import CPU, WorkerDevice, hccl_init_method
from vms_plugin.worker.forward import step_logits
from vms_plugin.worker.grammar import apply_grammar_bitmask
from vms_plugin.worker.lora import AdapterManager
from vms_plugin.worker.pooling import Pooling
from vms_plugin.worker.prompt_logprobs import PromptLogprobsChunk, PromptLogprobsCollector, plan_chunk
from vms_plugin.worker.sampling import BatchSampler, SamplingState
from vms_plugin.worker.speculative import Drafter, DraftRequest, make_drafter
from vms_plugin.worker.tensor_exchange import to_torch
from vms_plugin.worker.tensor_parallel_group import VllmTensorParallelGroup
from vms_plugin.worker.warm_up import warm_up_forward, warm_up_sampling


@dataclass
class RequestState:
    prompt_token_ids: list[int]
    output_token_ids: list[int]
    block_ids: list[int]
    num_computed: int
    sampling: SamplingState | None  # None for a pooling request
    prompt_logprobs_pending: bool  # asked for prompt logprobs and not yet given them
    pooling: PoolingParams | None = None  # an embedding request (`--runner pooling`)
    lora: LoRARequest | None = None  # the LoRA adapter the request runs with (`--enable-lora`)

    @property
    def num_prompt_logprobs(self) -> int:
        return self.sampling.params.prompt_logprobs

    def all_token_ids(self) -> list[int]:
        return self.prompt_token_ids + self.output_token_ids


@dataclass
class PendingStep:
    """What execute_model leaves for sample_tokens."""

    req_ids: list[str]
    num_fed: list[int]  # known tokens each request ran (proposed ones aside)
    sampling_req_ids: list[str]
    drafts: list[list[int]]  # the proposed tokens each sampling request verifies (speculative decoding)
    prompt_chunks: list[PromptLogprobsChunk]
    logits: ms.Tensor | None  # the sampling rows (1 + drafts per request), then each prompt chunk's rows in order

    @property
    def num_sampling_rows(self) -> int:
        return len(self.sampling_req_ids) + sum(len(d) for d in self.drafts)


class MindSporeModelRunner:
    def __init__(self, vllm_config: VllmConfig, device: WorkerDevice = CPU) -> None:
        self.vllm_config = vllm_config
        self.device = device
        self.block_size = vllm_config.cache_config.block_size
        self.model = None
        self.requests: dict[str, RequestState] = {}
        self.pending: PendingStep | None = None
        self.sampler: BatchSampler | None = None
        self.prompt_logprobs: PromptLogprobsCollector | None = None
        self.pooling: Pooling | None = None  # an embedding model's pooler (`--runner pooling`)
        self.drafter: Drafter | None = None  # speculative decoding's proposer (`--speculative-config`)
        self.draft_token_ids: DraftTokenIds | None = None  # proposed after the last step, for the engine core
        self.adapters: AdapterManager | None = None  # LoRA adapters (`--enable-lora`)

    def load_model(self) -> None:
        model_dir = Path(self.vllm_config.model_config.model)
        if not model_dir.is_dir():
            raise FileNotFoundError(f"model path {model_dir} is not a local directory; vms serves local models only")
        model_config = self.vllm_config.model_config
        int8 = model_int8_scheme(self.vllm_config)
        group = tensor_parallel_group(self.device, self.vllm_config.parallel_config)
        expert_parallel = self.vllm_config.parallel_config.enable_expert_parallel
        dtype = storage_dtype_name(model_config.dtype)
        self.model = build_model(model_dir, dtype, int8, group, expert_parallel)
        self.sampler = BatchSampler(self.vllm_config)
        self.prompt_logprobs = PromptLogprobsCollector(self.vllm_config.model_config.logprobs_mode)
        self.pooling = Pooling(self.vllm_config) if model_config.runner_type == "pooling" else None
        self.drafter = make_drafter(self.vllm_config, lambda draft_dir: build_model(draft_dir, dtype, None, group))
        lora_config = self.vllm_config.lora_config
        if lora_config is not None:
            self.model.enable_adapters(lora_config.max_loras, lora_config.max_lora_rank)
            self.adapters = AdapterManager(lora_config, self.model.adapter_layers())

    def add_lora(self, lora_request: LoRARequest) -> bool:
        return self._adapter_manager().add(lora_request)

    def remove_lora(self, lora_id: int) -> bool:
        return self._adapter_manager().remove(lora_id)

    def pin_lora(self, lora_id: int) -> bool:
        return self._adapter_manager().pin(lora_id)

    def list_loras(self) -> set[int]:
        return set() if self.adapters is None else self.adapters.ids()

    def _adapter_manager(self) -> AdapterManager:
        if self.adapters is None:
            raise ValueError("LoRA adapters need the engine started with --enable-lora")
        return self.adapters

    def warm_up(self) -> None:
        """Run the model and the sampler once on dummy requests (worker/warm_up.py), after the KV cache exists."""
        warm_up_forward(self._forward, self.block_size)
        warm_up_sampling(self.sampler)
        if self.drafter is not None:
            self.drafter.warm_up()

    def attention_layers(self) -> list:
        """Every KV-cached layer: the model's, then a draft model's."""
        draft = [] if self.drafter is None else self.drafter.attention_layers()
        return [*self.model.attention_layers(), *draft]

    def allocate_kv_cache(self, num_blocks: int) -> None:
        for attention in self.attention_layers():
            attention.allocate_kv_cache(num_blocks, self.block_size)

    def _copy_kv_blocks(self, copies: list[tuple[int, int]]) -> None:
        """Copy-on-write of shared prefix blocks, requested by the scheduler before the step runs."""
        pairs = np.array(copies, dtype=np.int32)
        offsets = np.arange(self.block_size, dtype=np.int32)
        src = (pairs[:, :1] * self.block_size + offsets).reshape(-1)
        dst = (pairs[:, 1:] * self.block_size + offsets).reshape(-1)
        for attention in self.attention_layers():
            attention.copy_kv_slots(src, dst)

    def plan_step(self, scheduler_output: SchedulerOutput) -> tuple[list[str], list[ScheduledRequest]]:
        """Apply the scheduler's changes to the live requests; return this step's requests in scheduling order."""
        self._update_states(scheduler_output)
        req_ids = list(scheduler_output.num_scheduled_tokens)
        drafts = scheduler_output.scheduled_spec_decode_tokens
        slots = self._adapter_slots(req_ids)
        return req_ids, [
            self._scheduled(req_id, scheduler_output.num_scheduled_tokens[req_id], drafts.get(req_id, ()), slots)
            for req_id in req_ids
        ]

    def _adapter_slots(self, req_ids: list[str]) -> dict[int, int]:
        """The LoRA slot of each adapter the step's requests run with (by adapter id)."""
        adapters = [lora for req_id in req_ids if (lora := self.requests[req_id].lora) is not None]
        return {} if not adapters else self._adapter_manager().slots_for(adapters)

    def execute_model(self, scheduler_output: SchedulerOutput) -> ModelRunnerOutput | None:
        req_ids, scheduled = self.plan_step(scheduler_output)
        if not scheduled:
            return EMPTY_MODEL_RUNNER_OUTPUT
        batch = build_step_batch(scheduled, self.block_size)
        if self.pooling is not None:
            return self._pool(req_ids, scheduled, batch)
        sampling_req_ids = [req_ids[row] for row in batch.sampling_rows]
        proposed = scheduler_output.scheduled_spec_decode_tokens
        drafts = [list(proposed.get(req_id, ())) for req_id in sampling_req_ids]
        prompt_chunks = self._prompt_logprobs_chunks(req_ids, scheduled, batch)
        logits_index = np.concatenate([batch.logits_index, *(chunk.token_rows for chunk in prompt_chunks)])
        logits = self._forward(batch, logits_index)  # also when nothing samples: prompt chunks still fill the KV
        has_rows = len(logits_index) > 0
        num_fed = [len(request.token_ids) - request.num_drafts for request in scheduled]
        self.pending = PendingStep(
            req_ids, num_fed, sampling_req_ids, drafts, prompt_chunks, logits if has_rows else None
        )
        return None

    def sample_tokens(self, grammar_output: GrammarOutput | None) -> ModelRunnerOutput:
        step, self.pending = self.pending, None
        if step is None:
            return EMPTY_MODEL_RUNNER_OUTPUT
        req_id_to_index = {req_id: index for index, req_id in enumerate(step.req_ids)}
        sampled: list[list[int]] = [[] for _ in step.req_ids]
        logprobs = None
        num_rows = step.num_sampling_rows
        prompt_logprobs = self._collect_prompt_logprobs(step, num_rows)
        if step.sampling_req_ids:
            states = [self.requests[req_id] for req_id in step.sampling_req_ids]
            # Prompt logprobs' rows follow the sampling rows; without them a slice would be one more launch.
            logits = to_torch(step.logits[:num_rows] if step.logits.shape[0] > num_rows else step.logits)
            if grammar_output is not None:
                num_drafts = dict(zip(step.sampling_req_ids, map(len, step.drafts), strict=True))
                row_req_ids = [req_id for req_id, count in num_drafts.items() for _ in range(1 + count)]
                apply_grammar_bitmask(logits, row_req_ids, grammar_output, num_drafts)
            any_drafts = any(step.drafts)
            tokens, sampled_logprobs = self.sampler.sample(
                logits, [state.sampling for state in states], step.drafts if any_drafts else None
            )
            for req_id, state, kept in zip(step.sampling_req_ids, states, tokens, strict=True):
                state.output_token_ids.extend(kept)
                sampled[req_id_to_index[req_id]] = kept
            if sampled_logprobs is not None:
                logprobs = sampled_logprobs._replace(cu_num_generated_tokens=_cumulative_counts(sampled))
        if self.drafter is not None:  # also when nothing sampled: a draft model runs every prefill chunk too
            self._propose_drafts(step, sampled)
        return ModelRunnerOutput(
            req_ids=step.req_ids,
            req_id_to_index=req_id_to_index,
            sampled_token_ids=sampled,
            logprobs=logprobs,
            prompt_logprobs_dict=prompt_logprobs,
        )

    def _propose_drafts(self, step: PendingStep, sampled: list[list[int]]) -> None:
        """The next step's drafts of every request that sampled (vLLM's engine core takes them after this step);
        the drafter sees every request of the step."""
        requests = []
        for req_id, num_fed, kept in zip(step.req_ids, step.num_fed, sampled, strict=True):
            state = self.requests[req_id]
            requests.append(
                DraftRequest(state.all_token_ids(), state.num_computed, num_fed, state.block_ids, bool(kept))
            )
        self.draft_token_ids = DraftTokenIds(step.req_ids, self.drafter.propose(requests))

    def take_draft_token_ids(self) -> DraftTokenIds | None:
        drafts, self.draft_token_ids = self.draft_token_ids, None
        return drafts

    def _pool(self, req_ids: list[str], scheduled: list[ScheduledRequest], batch: StepBatch) -> ModelRunnerOutput:
        """An embedding step: the final hidden states of every scheduled token through vLLM's pooler."""
        hidden = self.model.hidden_states(Tensor(batch.input_ids), layer_ops().attention_inputs(batch))
        states = [self.requests[req_id] for req_id in req_ids]
        vectors = self.pooling.outputs(
            to_torch(hidden),
            req_ids,
            [state.pooling for state in states],
            [state.prompt_token_ids for state in states],
            np.array([len(request.token_ids) for request in scheduled]),
            np.array([request.num_computed for request in scheduled]),
        )
        return ModelRunnerOutput(
            req_ids=req_ids,
            req_id_to_index={req_id: index for index, req_id in enumerate(req_ids)},
            sampled_token_ids=[[] for _ in req_ids],
            pooler_output=vectors,
        )

    def _prompt_logprobs_chunks(
        self, req_ids: list[str], scheduled: list[ScheduledRequest], batch: StepBatch
    ) -> list[PromptLogprobsChunk]:
        chunks = []
        for row, (req_id, request) in enumerate(zip(req_ids, scheduled, strict=True)):
            state = self.requests[req_id]
            if state.prompt_logprobs_pending:
                chunk = plan_chunk(
                    req_id,
                    len(state.prompt_token_ids),
                    state.num_computed,
                    len(request.token_ids),
                    int(batch.query_starts[row]),
                )
                if chunk is not None:
                    chunks.append(chunk)
        return chunks

    def _collect_prompt_logprobs(self, step: PendingStep, num_sampling_rows: int) -> dict[str, LogprobsTensors | None]:
        if not step.prompt_chunks:
            return {}
        vocab_size = self.sampler.vocab_size
        has_rows = any(len(chunk.token_rows) for chunk in step.prompt_chunks)
        logits = to_torch(step.logits[num_sampling_rows:]) if has_rows else None
        requests = {chunk.req_id: self.requests[chunk.req_id] for chunk in step.prompt_chunks}
        finished = self.prompt_logprobs.collect(
            step.prompt_chunks,
            logits,
            prompts={req_id: state.prompt_token_ids for req_id, state in requests.items()},
            num_logprobs={
                req_id: vocab_size if state.num_prompt_logprobs == -1 else state.num_prompt_logprobs
                for req_id, state in requests.items()
            },
        )
        for req_id in finished:
            requests[req_id].prompt_logprobs_pending = False
        return finished

    def _update_states(self, scheduler_output: SchedulerOutput) -> None:
        for req_id in scheduler_output.finished_req_ids:
            self.requests.pop(req_id, None)
            if self.prompt_logprobs is not None:
                self.prompt_logprobs.forget(req_id)
            if self.pooling is not None:
                self.pooling.forget(req_id)
        if scheduler_output.kv_cache_block_copies:
            self._copy_kv_blocks(scheduler_output.kv_cache_block_copies)
        for new in scheduler_output.scheduled_new_reqs:
            if new.prompt_token_ids is None:
                raise ValueError(f"request {new.req_id} has no prompt token ids (prompt embeddings are not supported)")
            prompt, outputs, sampling = list(new.prompt_token_ids), [], new.sampling_params
            self.requests[new.req_id] = RequestState(
                prompt_token_ids=prompt,
                output_token_ids=outputs,
                block_ids=list(new.block_ids[0]),
                num_computed=new.num_computed_tokens,
                sampling=None if sampling is None else SamplingState.for_request(sampling, prompt, outputs),
                prompt_logprobs_pending=sampling is not None and sampling.prompt_logprobs is not None,
                pooling=new.pooling_params,
                lora=new.lora_request,
            )
        cached = scheduler_output.scheduled_cached_reqs
        for index, req_id in enumerate(cached.req_ids):
            state = self.requests[req_id]
            state.num_computed = cached.num_computed_tokens[index]
            del state.output_token_ids[cached.num_output_tokens[index] :]
            new_block_ids = cached.new_block_ids[index]
            if req_id in cached.resumed_req_ids:
                state.block_ids = list(new_block_ids[0])
            elif new_block_ids is not None:
                state.block_ids.extend(new_block_ids[0])

    def _scheduled(
        self, req_id: str, num_tokens: int, drafts: Sequence[int], adapter_slots: dict[int, int]
    ) -> ScheduledRequest:
        """The request's next `num_tokens` tokens: known tokens, then the drafts the scheduler added after them (-1,
        a draft the grammar refused, runs as token 0: the rejection sampler never accepts it)."""
        state = self.requests[req_id]
        tokens = state.all_token_ids()
        end = state.num_computed + num_tokens - len(drafts)
        return ScheduledRequest(
            token_ids=tokens[state.num_computed : end] + [max(token, 0) for token in drafts],
            num_computed=state.num_computed,
            block_ids=state.block_ids,
            wants_logits=end >= len(tokens),
            num_drafts=len(drafts),
            adapter_slot=-1 if state.lora is None else adapter_slots[state.lora.lora_int_id],
        )

    def _forward(self, batch: StepBatch, logits_index: np.ndarray) -> ms.Tensor:
        return step_logits(self.model, batch, logits_index)


def tensor_parallel_group(device: WorkerDevice, parallel_config: ParallelConfig) -> TensorParallelGroup:
    """This worker's rank among vLLM's tensor-parallel workers: over HCCL on Ascend, over vLLM's own group (its CPU
    communicator) on CPU; or the single rank."""
    if get_tensor_model_parallel_world_size() == 1:
        return SingleRank()
    if device.is_ascend:
        init_method = hccl_init_method(parallel_config.master_addr, parallel_config.master_port)
        return HcclGroup(get_tensor_model_parallel_rank(), get_tensor_model_parallel_world_size(), init_method)
    return VllmTensorParallelGroup()


def storage_dtype_name(dtype: torch.dtype) -> str:
    """vLLM's resolved --dtype (torch.bfloat16) as the plugin names storage types ("bfloat16")."""
    return str(dtype).removeprefix("torch.")


def _cumulative_counts(sampled: list[list[int]]) -> list[int]:
    """Where each request's tokens start in the step's flat logprobs (vLLM's `cu_num_generated_tokens`)."""
    return np.concatenate([[0], np.cumsum([len(tokens) for tokens in sampled])]).tolist()
