"""`vms model prepare` turns the embedded GGUF into a complete Hugging Face directory once, atomically."""

import json
import time
from pathlib import Path

import pytest
from conftest import run_vms

pytestmark = pytest.mark.integration


def test_prepared_directory_is_complete_and_nothing_is_left_behind(default_model_dir: Path, model_cache: Path) -> None:
    names = {path.name for path in default_model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", ".vms-complete"} <= names
    config = json.loads((default_model_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert (config["num_hidden_layers"], config["hidden_size"], config["vocab_size"]) == (30, 576, 49152)
    assert "<|im_start|>" in (default_model_dir / "chat_template.jinja").read_text()
    lock = f".{default_model_dir.name}.lock"  # preparations take turns on it (it stays, empty)
    assert sorted(path.name for path in model_cache.iterdir()) == sorted([default_model_dir.name, lock])


def test_second_prepare_skips_the_work(default_model_dir: Path, model_cache: Path) -> None:
    weights_mtime = (default_model_dir / "model.safetensors").stat().st_mtime_ns
    started = time.monotonic()
    result = run_vms("model", "prepare", cache=model_cache, timeout=120)
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()) == default_model_dir
    assert time.monotonic() - started < 15
    assert (default_model_dir / "model.safetensors").stat().st_mtime_ns == weights_mtime
