"""Bad configuration stops `vms serve` with exit code 2 and one line naming the variable, before anything starts.

Each case runs the real `vms serve` in its own process with a clean VMS_* environment plus the case's variables.
"Before anything starts" is checked through VMS_RUN_DIR: `vms serve` renders supervisord's configuration there
before it starts supervisord, so the directory must not exist afterwards. Cases run four at a time.
"""

import json
import os
import struct
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import VMS


@dataclass(frozen=True)
class Case:
    name: str
    environment: dict[str, str]  # "{tmp}" in a value is replaced by a scratch directory holding the fixtures below
    expected: str  # text the single error line must contain (besides the variable's name)


CASES = [
    # wrong types
    Case("port not a number", {"VMS_PORT": "abc"}, "Input should be a valid integer"),
    Case("admin port a float", {"VMS_ADMIN_PORT": "80.5"}, "VMS_ADMIN_PORT"),
    Case("max model len a word", {"VMS_MAX_MODEL_LEN": "many"}, "valid integer"),
    Case("kv cache memory without a number", {"VMS_KV_CACHE_MEMORY": "lots"}, "could not parse value and unit"),
    Case("health interval a word", {"VMS_HEALTH_INTERVAL": "soon"}, "valid number"),
    Case("drain timeout a word", {"VMS_DRAIN_TIMEOUT": "forever"}, "valid number"),
    Case("tensor parallel size a word", {"VMS_TENSOR_PARALLEL_SIZE": "two"}, "expected auto or an integer >= 1"),
    Case("visible devices not ids", {"VMS_VISIBLE_DEVICES": "a,b"}, "expected comma-separated NPU ids"),
    # values out of range or not among the allowed ones
    Case("port zero", {"VMS_PORT": "0"}, "allowed: 1-65535"),
    Case("port above 65535", {"VMS_PORT": "70000"}, "allowed: 1-65535"),
    Case("negative port", {"VMS_PORT": "-1"}, "allowed: 1-65535"),
    Case("admin port above 65535", {"VMS_ADMIN_PORT": "65536"}, "allowed: 1-65535"),
    Case("unknown device", {"VMS_DEVICE": "gpu"}, "'auto', 'ascend' or 'cpu'"),
    Case("unknown dtype", {"VMS_DTYPE": "int8"}, "'auto', 'float32', 'float16' or 'bfloat16'"),
    Case("unknown log level", {"VMS_LOG_LEVEL": "loud"}, "'debug', 'info', 'warning' or 'error'"),
    Case("max model len too small", {"VMS_MAX_MODEL_LEN": "8"}, "greater than or equal to 16"),
    Case("tensor parallel size zero", {"VMS_TENSOR_PARALLEL_SIZE": "0"}, "expected auto or an integer >= 1"),
    Case("negative health interval", {"VMS_HEALTH_INTERVAL": "-1"}, "greater than 0"),
    Case("zero engine start timeout", {"VMS_ENGINE_START_TIMEOUT": "0"}, "greater than 0"),
    Case("zero failure threshold", {"VMS_HEALTH_FAILURE_THRESHOLD": "0"}, "greater than or equal to 1"),
    Case("backoff that shrinks", {"VMS_RESTART_BACKOFF_FACTOR": "0.5"}, "greater than or equal to 1"),
    Case("zero crash loop limit", {"VMS_CRASH_LOOP_LIMIT": "0"}, "greater than or equal to 1"),
    Case("negative crash loop window", {"VMS_CRASH_LOOP_WINDOW": "-3"}, "greater than 0"),
    # rules across variables
    Case("admin port clashes with the default API port", {"VMS_ADMIN_PORT": "8000"}, "must differ"),
    Case("both ports set to the same", {"VMS_PORT": "9000", "VMS_ADMIN_PORT": "9000"}, "VMS_PORT and VMS_ADMIN_PORT"),
    Case(
        "backoff cap below its start",
        {"VMS_RESTART_BACKOFF_INITIAL": "10", "VMS_RESTART_BACKOFF_MAX": "5"},
        "VMS_RESTART_BACKOFF_MAX must be at least VMS_RESTART_BACKOFF_INITIAL",
    ),
    Case(
        "token and token file both set",
        {"VMS_ADMIN_TOKEN": "a", "VMS_ADMIN_TOKEN_FILE": "{tmp}/token"},
        "VMS_ADMIN_TOKEN and VMS_ADMIN_TOKEN_FILE are both set: set one of them",
    ),
    # engine arguments that conflict with vms's own
    Case("engine args set the port", {"VMS_ENGINE_ARGS": "--port 9"}, "--port is set by vms itself"),
    Case("engine args set the model", {"VMS_ENGINE_ARGS": "--model /x"}, "--model is set by vms itself"),
    Case("engine args badly quoted", {"VMS_ENGINE_ARGS": "--x 'unclosed"}, "not valid shell quoting"),
    # secrets
    Case("token file missing", {"VMS_ADMIN_TOKEN_FILE": "{tmp}/no-such-token"}, "cannot read it"),
    Case("token file empty", {"VMS_ADMIN_TOKEN_FILE": "{tmp}/empty-token"}, "the file is empty"),
    # hardware
    Case("ascend without an NPU", {"VMS_DEVICE": "ascend"}, "no /dev/davinci* device nodes"),
    Case("tensor parallel beyond the cores", {"VMS_TENSOR_PARALLEL_SIZE": "4096"}, "each CPU rank needs a core"),
    Case("data parallel size zero", {"VMS_DATA_PARALLEL_SIZE": "0"}, "greater than or equal to 1"),
    Case("engine args set data parallel", {"VMS_ENGINE_ARGS": "--data-parallel-size 2"}, "VMS_ variable instead"),
    # more than one machine
    Case("unknown role", {"VMS_ROLE": "head"}, "'serve' or 'ray-worker'"),
    Case("ray worker without a head", {"VMS_ROLE": "ray-worker"}, "VMS_ROLE=ray-worker needs VMS_RAY_ADDRESS"),
    Case("ray address without a port", {"VMS_RAY_ADDRESS": "head"}, "expected the Ray head as host:port"),
    Case("unknown executor backend", {"VMS_DISTRIBUTED_EXECUTOR_BACKEND": "uni"}, "'mp' or 'ray'"),
    Case("ray node ranks zero", {"VMS_RAY_NODE_RANKS": "0"}, "expected auto or an integer >= 1"),
    Case(
        "engine args choose the executor",
        {"VMS_ENGINE_ARGS": "--distributed-executor-backend ray"},
        "--distributed-executor-backend is set by vms itself",
    ),
    # models
    Case("model path missing", {"VMS_MODEL": "{tmp}/no-such-model"}, "does not exist or is not a directory"),
    Case("model path is a file", {"VMS_MODEL": "{tmp}/token"}, "does not exist or is not a directory"),
    Case("model without config", {"VMS_MODEL": "{tmp}/empty-model"}, "has no config.json"),
    Case("model config unreadable", {"VMS_MODEL": "{tmp}/broken-model"}, "cannot read"),
    Case("model architecture unsupported", {"VMS_MODEL": "{tmp}/gpt2-model"}, "GPT2LMHeadModel is not implemented"),
    Case("model without weights", {"VMS_MODEL": "{tmp}/weightless-model"}, "has no *.safetensors weights"),
    Case("model weights truncated", {"VMS_MODEL": "{tmp}/truncated-model"}, "is truncated"),
]


def write_fixtures(scratch: Path) -> None:
    (scratch / "token").write_text("secret\n")
    (scratch / "empty-token").write_text("  \n")
    (scratch / "empty-model").mkdir()
    (scratch / "broken-model").mkdir()
    (scratch / "broken-model" / "config.json").write_text("{not json")
    (scratch / "gpt2-model").mkdir()
    (scratch / "gpt2-model" / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"]}))
    llama = json.dumps({"architectures": ["LlamaForCausalLM"]})
    for name in ("weightless-model", "truncated-model"):
        (scratch / name).mkdir()
        (scratch / name / "config.json").write_text(llama)
    # A download cut short: the header promises a 4x4 float32 tensor, 16 of its 64 bytes arrived.
    header = json.dumps({"w": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 64]}}).encode()
    with (scratch / "truncated-model" / "model.safetensors").open("wb") as weights:
        weights.write(struct.pack("<Q", len(header)) + header + bytes(16))


def run_case(case: Case, scratch: Path, run_dir: Path) -> subprocess.CompletedProcess:
    environment = {name: value for name, value in os.environ.items() if not name.startswith("VMS_")}
    environment.update({name: value.replace("{tmp}", str(scratch)) for name, value in case.environment.items()})
    environment["VMS_RUN_DIR"] = str(run_dir)
    environment["VMS_MODEL_CACHE"] = str(scratch / "model-cache")  # where the embedded model would be prepared
    return subprocess.run([VMS, "serve"], env=environment, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    scratch = tmp_path_factory.mktemp("bad-configuration")
    write_fixtures(scratch)
    run_dirs = {case.name: scratch / "run" / str(index) for index, case in enumerate(CASES)}
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = pool.map(lambda case: run_case(case, scratch, run_dirs[case.name]), CASES)
        return {case.name: (result, run_dirs[case.name]) for case, result in zip(CASES, results, strict=True)}


def test_the_table_is_at_least_thirty_cases_with_distinct_names() -> None:
    assert len(CASES) >= 30
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_configuration_exits_2_with_one_line_naming_the_variable_before_anything_starts(
    case: Case, outcomes: dict[str, tuple[subprocess.CompletedProcess, Path]]
) -> None:
    result, run_dir = outcomes[case.name]
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, f"exit {result.returncode}; stderr:\n{result.stderr[-2000:]}"
    assert len(lines) == 1, f"expected one line, got:\n{result.stderr}"
    assert lines[0].startswith("vms: error: VMS_"), lines[0]
    assert any(name in lines[0] for name in case.environment), f"no variable named in: {lines[0]}"
    assert case.expected in lines[0], lines[0]
    assert "secret" not in lines[0]
    assert not run_dir.exists(), "vms serve got as far as rendering supervisord's configuration"
