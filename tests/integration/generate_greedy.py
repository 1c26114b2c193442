"""Greedy generation through vLLM's `LLM()`, run as its own process by the tests.

Whether vms_plugin or vLLM's own CPU path runs is decided by the environment (VMS_DISABLE=1 gives plain vLLM).
vLLM spawns its engine process, which needs this to be a real file with a main guard.
"""

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--prompts", type=Path, required=True, help="JSON list of token-id lists")
    parser.add_argument("--max-tokens", type=int, required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--enforce-eager", action="store_true")
    args = parser.parse_args()

    from vllm import LLM, SamplingParams
    from vllm.platforms import current_platform

    prompts = json.loads(args.prompts.read_text())
    llm = LLM(
        model=args.model,
        dtype="float32",
        max_model_len=512,
        kv_cache_memory_bytes=512 << 20,
        enforce_eager=args.enforce_eager,
        seed=0,
    )
    params = SamplingParams(temperature=0.0, max_tokens=args.max_tokens, ignore_eos=True)
    outputs = llm.generate([{"prompt_token_ids": ids} for ids in prompts], params)
    result = {
        "platform": type(current_platform).__name__,
        "token_ids": [list(output.outputs[0].token_ids) for output in outputs],
    }
    args.output.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
