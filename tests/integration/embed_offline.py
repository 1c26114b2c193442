"""Embeddings through vLLM's `LLM.embed()`, run as its own process by the tests (`--runner pooling --convert embed`).

Whether vms_plugin or vLLM's own CPU path runs is decided by the environment (VMS_DISABLE=1 gives plain vLLM).
"""

import argparse
import json
from pathlib import Path


def embed(job: dict) -> list[list[float]]:
    from vllm import LLM

    engine_args = {
        "runner": "pooling",
        "convert": "embed",
        "dtype": "float32",
        "max_model_len": 512,
        "kv_cache_memory_bytes": 256 << 20,
        "seed": 0,
        **job.get("engine_args", {}),
    }
    llm = LLM(model=job["model"], **engine_args)
    outputs = llm.embed([{"prompt_token_ids": ids} for ids in job["prompts"]])
    llm.llm_engine.engine_core.shutdown()
    return [list(output.outputs.embedding) for output in outputs]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--job", type=Path, required=True, help="JSON {model, prompts[, engine_args]}")
    parser.add_argument("--output", type=Path, required=True, help="JSON list of embeddings, one per prompt")
    args = parser.parse_args()
    args.output.write_text(json.dumps(embed(json.loads(args.job.read_text()))))


if __name__ == "__main__":
    main()
