"""Generation through vLLM's `LLM()`, run as its own process by the tests: greedy, plus named sampling sets.

Whether vms_plugin or vLLM's own CPU path runs is decided by the environment (VMS_DISABLE=1 gives plain vLLM).
vLLM spawns its engine process, which needs this to be a real file with a main guard. Several models can be
run one after the other in one process (`--jobs`), which saves a Python start and vLLM import per model.
"""

import argparse
import gc
import json
from pathlib import Path


def generate(job: dict, enforce_eager: bool) -> dict:
    from vllm import LLM, SamplingParams
    from vllm.platforms import current_platform

    engine_args = {
        "dtype": "float32",
        "max_model_len": 512,
        "kv_cache_memory_bytes": 256 << 20,
        "enforce_eager": enforce_eager,
        "skip_tokenizer_init": job.get("skip_tokenizer_init", False),
        "seed": 0,
        "disable_log_stats": False,  # keeps vLLM's Prometheus counters (prefix cache hits, preemptions)
        **job.get("engine_args", {}),
    }
    llm = LLM(model=job["model"], **engine_args)
    prompts = [{"prompt_token_ids": ids} for ids in job["prompts"]]
    params = SamplingParams(
        temperature=0.0, max_tokens=job["max_tokens"], ignore_eos=True, detokenize=False, logprobs=job.get("logprobs")
    )
    adapters = _lora_requests(job.get("loras"))
    for _ in range(job.get("repeat", 1)):  # a repeat finds the prompts' blocks in the prefix cache
        outputs = llm.generate(prompts, params, lora_request=adapters)
    sampled = {}
    for name, options in job.get("sampling", {}).items():  # each set is one batch of all prompts
        per_prompt = options if isinstance(options, list) else [options] * len(prompts)
        params = [_sampling_params(job["max_tokens"], prompt_options) for prompt_options in per_prompt]
        sampled[name] = [_completion(output) for output in llm.generate(prompts, params)]
    counters = {metric.name: getattr(metric, "value", None) for metric in llm.get_metrics()}
    result = {
        "platform": type(current_platform).__name__,
        "token_ids": [list(output.outputs[0].token_ids) for output in outputs],
        "logprobs": [[_positions(step) for step in output.outputs[0].logprobs or []] for output in outputs],
        "counters": {name: value for name, value in counters.items() if isinstance(value, int | float)},
        "sampled": sampled,
        "workers": llm.collective_rpc(_worker_memory) if job.get("report_workers") else [],
    }
    llm.llm_engine.engine_core.shutdown()
    del llm
    gc.collect()
    return result


def _lora_requests(paths: list[str | None] | None) -> list | None:
    """Each prompt's LoRA adapter (a directory, or None for the base model); one id per distinct directory."""
    from vllm.lora.request import LoRARequest

    if paths is None:
        return None
    ids = {path: index + 1 for index, path in enumerate(dict.fromkeys(p for p in paths if p))}
    return [None if path is None else LoRARequest(f"adapter-{ids[path]}", ids[path], path) for path in paths]


def _worker_memory(worker) -> dict:
    """A worker's rank, process, Ray node (under Ray), peak resident memory and the bytes of its model's parameters
    (KV caches aside)."""
    import os
    import resource

    import ray

    caches = ("k_cache", "v_cache", "latent_cache")
    parameters = [param for name, param in worker.get_model().parameters_and_names() if not name.endswith(caches)]
    return {
        "rank": worker.rank,
        "pid": os.getpid(),
        "ray_node": ray.get_runtime_context().get_node_id() if ray.is_initialized() else None,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "parameter_bytes": sum(param.nbytes for param in parameters),
    }


def _sampling_params(max_tokens: int, options: dict):
    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    options = {"max_tokens": max_tokens, "ignore_eos": True, "detokenize": False, **options}
    if "logit_bias" in options:  # JSON keys are strings; vLLM wants token ids
        options["logit_bias"] = {int(token): bias for token, bias in options["logit_bias"].items()}
    if "structured_outputs" in options:
        options["structured_outputs"] = StructuredOutputsParams(**options["structured_outputs"])
    return SamplingParams(**options)


def _completion(output) -> dict:
    """Token ids, text (if detokenized), why it ended, and each position's logprobs as {token id: [logprob, rank]}
    (prompt ones start at position 1)."""
    completion = output.outputs[0]
    return {
        "token_ids": list(completion.token_ids),
        "text": completion.text,
        "finish_reason": completion.finish_reason,
        "logprobs": [_positions(step) for step in completion.logprobs or []],
        "prompt_logprobs": [_positions(step) for step in (output.prompt_logprobs or [None])[1:]],
    }


def _positions(step) -> dict:
    return {str(token): [entry.logprob, entry.rank] for token, entry in step.items()}


def main() -> None:
    import os

    # collective_rpc with a function (_worker_memory) pickles it to the engine process: allowed for these tests.
    os.environ["VLLM_ALLOW_INSECURE_SERIALIZATION"] = "1"
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--jobs",
        type=Path,
        required=True,
        help="JSON list of {model, prompts, max_tokens[, engine_args, repeat, loras]}",
    )
    parser.add_argument("--output", type=Path, required=True, help="JSON list of results, one per job")
    parser.add_argument("--enforce-eager", action="store_true")
    args = parser.parse_args()
    jobs = json.loads(args.jobs.read_text())
    args.output.write_text(json.dumps([generate(job, args.enforce_eager) for job in jobs]))


if __name__ == "__main__":
    main()
