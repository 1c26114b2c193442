"""Greedy generation through vLLM's `LLM()`, run as its own process by the tests.

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

    llm = LLM(
        model=job["model"],
        dtype="float32",
        max_model_len=512,
        kv_cache_memory_bytes=256 << 20,
        enforce_eager=enforce_eager,
        skip_tokenizer_init=job.get("skip_tokenizer_init", False),
        seed=0,
    )
    params = SamplingParams(temperature=0.0, max_tokens=job["max_tokens"], ignore_eos=True, detokenize=False)
    outputs = llm.generate([{"prompt_token_ids": ids} for ids in job["prompts"]], params)
    result = {
        "platform": type(current_platform).__name__,
        "token_ids": [list(output.outputs[0].token_ids) for output in outputs],
    }
    llm.llm_engine.engine_core.shutdown()
    del llm
    gc.collect()
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=Path, required=True, help="JSON list of {model, prompts, max_tokens}")
    parser.add_argument("--output", type=Path, required=True, help="JSON list of results, one per job")
    parser.add_argument("--enforce-eager", action="store_true")
    args = parser.parse_args()
    jobs = json.loads(args.jobs.read_text())
    args.output.write_text(json.dumps([generate(job, args.enforce_eager) for job in jobs]))


if __name__ == "__main__":
    main()
