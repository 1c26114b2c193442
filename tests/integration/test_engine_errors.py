"""Engine start-up failures an operator can fix reach them as one clear message in the server's output."""

import os
import socket
import subprocess
from pathlib import Path

import pytest
from conftest import VMS

pytestmark = pytest.mark.integration


def test_kv_cache_too_small_for_one_sequence_names_the_blocks(default_model_dir: Path, tmp_path: Path) -> None:
    # SmolLM2: 30 layers x K and V x 128 tokens x 3 KV heads x 64 x 4 bytes = 5.6 MiB per block; 2048 tokens need 16.
    with socket.socket() as sock:  # the engine fails before it binds; the port only has to be valid
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [VMS, "serve", "--model", str(default_model_dir), "--port", str(port), "--max-model-len", "2048"]
    env = {**os.environ, "VMS_KV_CACHE_MEMORY": "50MiB"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "the KV cache holds 8 blocks of 128 tokens" in output
    assert "max_model_len 2048 needs 16 blocks" in output
