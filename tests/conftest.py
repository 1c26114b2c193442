"""Shared fixtures: the converted default model is made once per test session in a private model cache."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

VMS = str(Path(sys.executable).with_name("vms"))


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="session")
def default_model_dir(model_cache: Path) -> Path:
    """SmolLM2-135M-Instruct converted from the embedded GGUF by `vms model prepare`, as a user would."""
    result = subprocess.run(
        [VMS, "model", "prepare"],
        env={**os.environ, "VMS_MODEL_CACHE": str(model_cache)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    return Path(result.stdout.strip().splitlines()[-1])
