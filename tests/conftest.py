"""Shared fixtures: the converted default model is made once per test session in a private model cache."""

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from tiny_models import (
    ARCHITECTURES,
    DEEPSEEK_ARCHITECTURES,
    GLM_ARCHITECTURE,
    MOE_ARCHITECTURES,
    MOE_SIZES,
    save_compressed_tensors_w8a8,
    save_tiny_model,
)

VMS = str(Path(sys.executable).with_name("vms"))
SERVED_TINY_SIZES = {"num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 49152}


def run_vms(*args: str, cache: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the `vms` command as a user would, with its model cache at `cache`."""
    env = {**os.environ, "VMS_MODEL_CACHE": str(cache)}
    return subprocess.run([VMS, *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="session")
def default_model_dir(model_cache: Path) -> Path:
    """SmolLM2-135M-Instruct converted from the embedded GGUF by `vms model prepare`, as a user would."""
    result = run_vms("model", "prepare", cache=model_cache)
    assert result.returncode == 0, result.stderr
    return Path(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tiny random checkpoint per architecture the plugin implements."""
    root = tmp_path_factory.mktemp("tiny-models")
    return {architecture: save_tiny_model(architecture, root / architecture) for architecture in ARCHITECTURES}


@pytest.fixture(scope="session")
def tiny_moe_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tiny random checkpoint per mixture-of-experts architecture the plugin implements."""
    root = tmp_path_factory.mktemp("tiny-moe-models")
    return {name: save_tiny_model(name, root / name, **MOE_SIZES) for name in MOE_ARCHITECTURES}


@pytest.fixture(scope="session")
def tiny_deepseek_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tiny random checkpoint per DeepSeek architecture (tiny_models.DEEPSEEK_ARCHITECTURES) and GLM-4.5's,
    which routes its experts as DeepSeek-V3 does."""
    root = tmp_path_factory.mktemp("tiny-deepseek-models")
    return {name: save_tiny_model(name, root / name) for name in (*DEEPSEEK_ARCHITECTURES, GLM_ARCHITECTURE)}


@pytest.fixture(scope="session")
def default_prompts(default_model_dir) -> list[list[int]]:
    """The serving tests' prompts, tokenized for the default model."""
    from integration.conftest import PROMPTS
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(default_model_dir)
    return [tokenizer(text)["input_ids"] for text in PROMPTS]


@pytest.fixture(scope="session")
def default_float32_greedy(default_model_dir, default_prompts) -> list[list[int]]:
    """The baseline of the bfloat16, float16 and int8 greedy comparisons (tests/unit), decoded once."""
    from offline_model import GREEDY_TOKENS, greedy

    return greedy(default_model_dir, "float32", default_prompts, GREEDY_TOKENS)


@pytest.fixture(scope="session")
def w8a8_model_dir(tiny_model_dirs, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama as a compressed-tensors int8 W8A8 checkpoint (tiny_models.save_compressed_tensors_w8a8)."""
    target = tmp_path_factory.mktemp("w8a8") / "LlamaForCausalLM-W8A8"
    return save_compressed_tensors_w8a8(tiny_model_dirs["LlamaForCausalLM"], target)


@pytest.fixture(scope="session")
def served_tiny_model_dir(default_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Qwen2 that `vms serve` can serve (the default model's tokenizer and vocabulary size), with 4 query and
    2 KV heads so that it splits over 2 tensor-parallel ranks (the default model's 9 and 3 do not)."""
    target = tmp_path_factory.mktemp("served-tiny") / "Qwen2-tiny"
    return with_default_tokenizer(save_tiny_model("Qwen2ForCausalLM", target, **SERVED_TINY_SIZES), default_model_dir)


@pytest.fixture(scope="session")
def served_tiny_moe_model_dir(default_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Qwen3-MoE (8 experts, top 2) that `vms serve` can serve: the default model's tokenizer and vocabulary."""
    target = tmp_path_factory.mktemp("served-tiny-moe") / "Qwen3-MoE-tiny"
    model_dir = save_tiny_model("Qwen3MoeForCausalLM", target, **SERVED_TINY_SIZES, **MOE_SIZES)
    return with_default_tokenizer(model_dir, default_model_dir)


@pytest.fixture(scope="session")
def served_tiny_deepseek_model_dir(default_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny DeepSeek-V3 (latent attention, 8 experts top 2 in 4 groups) that `vms serve` can serve."""
    target = tmp_path_factory.mktemp("served-tiny-deepseek") / "DeepSeek-V3-tiny"
    model_dir = save_tiny_model("DeepseekV3ForCausalLM", target, **SERVED_TINY_SIZES)
    return with_default_tokenizer(model_dir, default_model_dir)


@pytest.fixture(scope="session")
def served_tiny_qwen3_dir(default_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Qwen3 with the default model's tokenizer and vocabulary (vLLM's pooling front end wants a tokenizer)."""
    target = tmp_path_factory.mktemp("served-tiny-qwen3") / "Qwen3-tiny"
    model_dir = save_tiny_model("Qwen3ForCausalLM", target, vocab_size=SERVED_TINY_SIZES["vocab_size"])
    return with_default_tokenizer(model_dir, default_model_dir)


def with_default_tokenizer(model_dir: Path, default_model_dir: Path) -> Path:
    """`model_dir` with the default model's tokenizer files (and chat template) copied in."""
    for source in default_model_dir.iterdir():
        if source.name.startswith(("tokenizer", "special_tokens", "vocab", "merges", "chat_template")):
            shutil.copy(source, model_dir / source.name)
    return model_dir


_MEASUREMENTS: list[str] = []


@pytest.fixture(scope="session")
def measurement() -> Callable[[str], None]:
    """Records a measured figure (a recovery time, an exit delay) for the "measurements" section at the end of
    the run, which pytest shows when every test passed too (a print is shown only for a failing test)."""

    def record(line: str) -> None:
        print(line)
        _MEASUREMENTS.append(line)

    return record


def pytest_terminal_summary(terminalreporter) -> None:
    if _MEASUREMENTS:
        terminalreporter.section("measurements")
        for line in _MEASUREMENTS:
            terminalreporter.write_line(line)
