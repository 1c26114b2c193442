"""Embeddings (`--runner pooling --convert embed`): a tiny Qwen3 turned into an embedding model by vLLM, served by
`vms serve` on /v1/embeddings, against vLLM's own CPU path on the same inputs.

16 inputs of 2 to 200 tokens in one request; then the same through vms with a 32-token step budget, so that every
long input is prefilled in chunks beside short ones; and a copy of the model whose sentence-transformers files ask
for mean pooling, which vLLM reads into its pooler config. Tolerance: cosine distance < 1e-4 (measured: ~1e-7).
"""

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from integration.served import serving

pytestmark = pytest.mark.integration

OFFLINE_SCRIPT = Path(__file__).with_name("embed_offline.py")
ENV = {"VMS_MAX_MODEL_LEN": "512", "VMS_KV_CACHE_MEMORY": "256MiB", "VMS_DTYPE": "float32"}
TOLERANCE = 1e-4
CHUNK_TOKENS = 32


@pytest.fixture(scope="module")
def inputs() -> list[list[int]]:
    rng = np.random.default_rng(6)
    lengths = [3, 200, 5, 64, 150, 7, 33, 120, 2, 90, 15, 180, 48, 9, 75, 31]
    return [rng.integers(0, 49152, size=n).tolist() for n in lengths]


def offline(model: Path, prompts: list[list[int]], workdir: Path, plugin: bool, **engine_args) -> np.ndarray:
    job, output = workdir / "job.json", workdir / "embeddings.json"
    job.write_text(json.dumps({"model": str(model), "prompts": prompts, "engine_args": engine_args}))
    env = {**os.environ, "VMS_DISABLE": "0" if plugin else "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    command = [sys.executable, str(OFFLINE_SCRIPT), "--job", str(job), "--output", str(output)]
    if not plugin:
        engine_args["enforce_eager"] = True
    with (workdir / "log").open("w") as log:
        result = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=900)
    assert result.returncode == 0, (workdir / "log").read_text()[-4000:]
    return np.array(json.loads(output.read_text()), dtype=np.float32)


def cosine_distances(ours: np.ndarray, reference: np.ndarray) -> np.ndarray:
    cosine = (ours * reference).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(reference, axis=1)
    return 1.0 - cosine


@pytest.fixture(scope="module")
def reference(served_tiny_qwen3_dir, inputs, tmp_path_factory) -> np.ndarray:
    return offline(served_tiny_qwen3_dir, inputs, tmp_path_factory.mktemp("embed-vllm-cpu"), plugin=False)


def test_embeddings_served_on_v1_embeddings_equal_vllms_cpu_path(
    served_tiny_qwen3_dir, inputs, reference, tmp_path, measurement
) -> None:
    model = str(served_tiny_qwen3_dir)
    with serving(tmp_path, ENV, "--model", model, "--", "--runner", "pooling", "--convert", "embed") as served:
        response = httpx.post(served.base_url + "/v1/embeddings", json={"model": model, "input": inputs}, timeout=120)
        log = served.log.read_text()
    assert "vms_plugin: MindSpore" in log
    assert response.status_code == 200, response.text
    ours = np.array([item["embedding"] for item in response.json()["data"]], dtype=np.float32)
    assert ours.shape == reference.shape == (len(inputs), 128)
    distances = cosine_distances(ours, reference)
    measurement(f"embeddings served vs vLLM's CPU path: largest cosine distance {distances.max():.1e} (16 inputs)")
    assert distances.max() < TOLERANCE
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)  # normalised, as vLLM's default


def test_embeddings_under_chunked_prefill_equal_vllms_cpu_path(served_tiny_qwen3_dir, inputs, reference, tmp_path):
    """A 32-token budget per step: each long input is prefilled over several steps beside short ones, its vector
    returned on the step its prompt completes."""
    assert sum(len(prompt) > CHUNK_TOKENS for prompt in inputs) >= 8
    chunked = offline(
        served_tiny_qwen3_dir,
        inputs,
        tmp_path,
        plugin=True,
        enable_chunked_prefill=True,
        max_num_batched_tokens=CHUNK_TOKENS,
        max_num_seqs=16,
    )
    assert cosine_distances(chunked, reference).max() < TOLERANCE


SENTENCE_TRANSFORMERS_MODULES = [
    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
]


def test_a_models_own_pooling_config_is_followed_as_vllm_follows_it(served_tiny_qwen3_dir, inputs, reference, tmp_path):
    """Mean pooling from the model's sentence-transformers files (1_Pooling/config.json): vms and vLLM's CPU path
    agree, and the vectors are not the default last-token ones."""
    model = tmp_path / "mean-pooled"
    shutil.copytree(served_tiny_qwen3_dir, model)
    (model / "modules.json").write_text(json.dumps(SENTENCE_TRANSFORMERS_MODULES))
    (model / "1_Pooling").mkdir()
    pooling = {"word_embedding_dimension": 128, "pooling_mode_mean_tokens": True, "pooling_mode_lasttoken": False}
    (model / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    (tmp_path / "vms").mkdir()
    (tmp_path / "vllm").mkdir()
    with ThreadPoolExecutor(2) as pool:  # the two processes overlap: each keeps about one core busy
        ours, theirs = pool.map(
            lambda plugin: offline(model, inputs, tmp_path / ("vms" if plugin else "vllm"), plugin=plugin),
            (True, False),
        )
    assert cosine_distances(ours, theirs).max() < TOLERANCE
    assert cosine_distances(ours, reference).min() > 1e-3  # mean pooling, not the last token
