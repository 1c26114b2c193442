"""VMS_* settings: defaults, every kind of bad value (one line each, exit 2), and the README's table."""

import os
import re
import subprocess
from pathlib import Path

import pytest
from conftest import VMS

from vms_supervisor.engine_command import engine_argv
from vms_supervisor.settings import SettingsError, load_settings, settings_table

README = Path(__file__).parents[2] / "README.md"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("VMS_"):
            monkeypatch.delenv(name)


def test_defaults_serve_the_embedded_model_on_localhost() -> None:
    settings = load_settings()
    assert (settings.model, settings.host, settings.port, settings.admin_port) == (None, "127.0.0.1", 8000, 8081)
    assert int(settings.kv_cache_memory) == 1 << 30
    assert settings.tensor_parallel_size == "auto"


def test_variables_are_read_and_units_parsed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VMS_KV_CACHE_MEMORY", "512MiB")
    monkeypatch.setenv("VMS_DEVICE", "CPU")
    monkeypatch.setenv("VMS_TENSOR_PARALLEL_SIZE", "2")
    monkeypatch.setenv("VMS_ENGINE_ARGS", "--max-num-seqs 8 --enable-prefix-caching")
    monkeypatch.setenv("VMS_QUANTIZATION", "INT8_per_channel")
    settings = load_settings()
    assert int(settings.kv_cache_memory) == 512 << 20
    assert settings.device == "cpu"
    monkeypatch.setenv("VMS_DATA_PARALLEL_SIZE", "2")
    settings = load_settings()
    assert (settings.tensor_parallel_size, settings.data_parallel_size) == ("2", 2)
    argv = engine_argv(settings, tmp_path, tensor_parallel_size=2)
    assert argv[argv.index("--kv-cache-memory-bytes") + 1] == str(512 << 20)
    assert argv[argv.index("--tensor-parallel-size") + 1] == "2"
    assert argv[argv.index("--data-parallel-size") + 1] == "2"
    assert argv[argv.index("--quantization") + 1] == "int8_per_channel"
    assert argv[-3:] == ["--max-num-seqs", "8", "--enable-prefix-caching"]


def test_flags_override_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VMS_PORT", "9000")
    assert load_settings(port=9100).port == 9100


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("VMS_PORT", "abc", "VMS_PORT='abc': Input should be a valid integer"),
        ("VMS_PORT", "70000", "(allowed: 1-65535)"),
        ("VMS_DEVICE", "gpu", "VMS_DEVICE='gpu': Input should be 'auto', 'ascend' or 'cpu'"),
        ("VMS_QUANTIZATION", "awq", "VMS_QUANTIZATION='awq': Input should be 'none', 'int8_per_channel_weight_only'"),
        ("VMS_TENSOR_PARALLEL_SIZE", "0", "VMS_TENSOR_PARALLEL_SIZE='0': expected auto or an integer >= 1"),
        ("VMS_VISIBLE_DEVICES", "a,b", "VMS_VISIBLE_DEVICES='a,b': expected comma-separated NPU ids"),
        ("VMS_KV_CACHE_MEMORY", "lots", "VMS_KV_CACHE_MEMORY='lots': could not parse value and unit"),
        ("VMS_HEALTH_INTERVAL", "-1", "VMS_HEALTH_INTERVAL='-1': Input should be greater than 0"),
        ("VMS_LOG_LEVEL", "loud", "VMS_LOG_LEVEL='loud': Input should be 'debug', 'info', 'warning' or 'error'"),
        ("VMS_ENGINE_ARGS", "--port 9", "--port is set by vms itself; use its VMS_ variable instead"),
        ("VMS_ENGINE_ARGS", "--x 'unclosed", 'VMS_ENGINE_ARGS="--x \'unclosed": not valid shell quoting'),
    ],
)
def test_each_bad_value_is_one_line_naming_variable_value_and_rule(monkeypatch, variable, value, expected) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert len(caught.value.problems) == 1
    assert expected in caught.value.problems[0]


def test_rules_across_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VMS_ADMIN_PORT", "8000")
    with pytest.raises(SettingsError, match="VMS_PORT and VMS_ADMIN_PORT must differ"):
        load_settings()


def test_token_file_is_read_and_never_printed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("s3cret\n")
    monkeypatch.setenv("VMS_ADMIN_TOKEN_FILE", str(secret))
    settings = load_settings()
    assert settings.token() == "s3cret"
    monkeypatch.delenv("VMS_ADMIN_TOKEN_FILE")
    monkeypatch.setenv("VMS_ADMIN_TOKEN", "s3cret")
    assert "s3cret" not in str(load_settings().redacted())


def test_vms_config_reports_every_problem_and_exits_2(tmp_path: Path) -> None:
    env = {**os.environ, "VMS_PORT": "abc", "VMS_DEVICE": "gpu", "VMS_MODEL": str(tmp_path)}
    result = subprocess.run([VMS, "config"], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("vms: error: VMS_") for line in lines)


def test_vms_config_prints_redacted_settings_and_the_engine_command(tmp_path: Path) -> None:
    env = {**os.environ, "VMS_ADMIN_TOKEN": "s3cret", "VMS_MODEL": str(tmp_path)}
    env.pop("VLLM_WORKER_MULTIPROC_METHOD", None)
    result = subprocess.run([VMS, "config", "--port", "8123"], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "VMS_ADMIN_TOKEN=***" in result.stdout and "s3cret" not in result.stdout
    engine_line = r"^engine: VLLM_WORKER_MULTIPROC_METHOD=fork \S+ -m vllm\.\S+ --model \S+ .*--port 8123 "
    assert re.search(engine_line, result.stdout, re.MULTILINE), result.stdout


def test_readme_environment_table_is_generated_from_settings() -> None:
    section = re.search(r"<!-- settings-table:start -->\n(.*?)\n<!-- settings-table:end -->", README.read_text(), re.S)
    assert section, "README.md lost its settings-table markers"
    assert section.group(1) == settings_table(), (
        "README's table drifted: paste vms_supervisor.settings.settings_table()"
    )


def test_device_ascend_on_this_cpu_host_stops_with_the_reason(tmp_path: Path) -> None:
    env = {**os.environ, "VMS_DEVICE": "ascend", "VMS_MODEL": str(tmp_path)}
    result = subprocess.run([VMS, "config"], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "vms: error: VMS_DEVICE=ascend but no /dev/davinci* device nodes "
        "(run the container with --device /dev/davinciN)"
    )
