"""Bad input to `vms` stops with exit code 2 and one line naming the problem, and leaves no half-written model."""

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import run_vms

from vms_supervisor.serve import RunDirError, make_run_dir
from vms_supervisor.settings import Settings


def assert_one_line_error(result: subprocess.CompletedProcess, *expected: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one error line, got:\n{result.stderr}"
    assert lines[0].startswith("vms: error: ")
    for text in expected:
        assert text in lines[0]


def test_missing_model_path_is_one_clear_line(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    assert_one_line_error(run_vms("serve", "--model", str(missing), cache=tmp_path), str(missing), "does not exist")


def test_directory_without_config_is_one_clear_line(tmp_path: Path) -> None:
    assert_one_line_error(run_vms("serve", "--model", str(tmp_path), cache=tmp_path), "has no config.json")


def test_unreadable_config_is_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    assert_one_line_error(run_vms("serve", "--model", str(tmp_path), cache=tmp_path), "cannot read", "config.json")


def test_unimplemented_architecture_names_it_and_what_is_supported(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["Gemma3ForCausalLM"]}))
    result = run_vms("serve", "--model", str(tmp_path), cache=tmp_path)
    dense = "LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM"
    experts = "Qwen2MoeForCausalLM, Qwen3MoeForCausalLM, MixtralForCausalLM"
    deepseek = "DeepseekV2ForCausalLM, DeepseekV3ForCausalLM, Glm4MoeForCausalLM"
    assert_one_line_error(result, "Gemma3ForCausalLM", "not implemented", f"supported: {dense}, {experts}, {deepseek}")


def test_corrupted_gguf_is_one_clear_line_and_leaves_cache_clean(tmp_path: Path) -> None:
    corrupted = tmp_path / "broken.gguf"
    corrupted.write_bytes(b"GGUF" + os.urandom(4096))
    cache = tmp_path / "cache"
    cache.mkdir()
    result = run_vms("model", "prepare", "--gguf", str(corrupted), "--output", str(cache / "model"), cache=cache)
    assert_one_line_error(result, str(corrupted), "GGUF")
    assert list(cache.iterdir()) == []


def test_truncated_gguf_is_refused(tmp_path: Path) -> None:
    truncated = tmp_path / "short.gguf"
    truncated.write_bytes(b"GG")
    result = run_vms("model", "prepare", "--gguf", str(truncated), "--output", str(tmp_path / "m"), cache=tmp_path)
    assert_one_line_error(result, str(truncated))
    assert not (tmp_path / "m").exists()


def test_missing_gguf_is_one_clear_line(tmp_path: Path) -> None:
    missing = tmp_path / "absent.gguf"
    result = run_vms("model", "prepare", "--gguf", str(missing), "--output", str(tmp_path / "m"), cache=tmp_path)
    assert_one_line_error(result, "GGUF file not found", str(missing))


def test_a_run_directory_that_cannot_be_made_names_the_place(tmp_path: Path) -> None:
    """(No writable temporary directory at all is shown in the container: tests/container/test_restricted.py.)"""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(RunDirError, match=f"the run directory cannot be made in {blocker / 'run'} .*VMS_RUN_DIR"):
        make_run_dir(Settings(run_dir=blocker / "run"))
    assert make_run_dir(Settings(run_dir=tmp_path / "run")) == tmp_path / "run" and (tmp_path / "run/logs").is_dir()
