"""What the platform decides while vLLM builds its configuration (`check_and_update_config`)."""

import os

import pytest

START_METHOD_VARIABLE = "VLLM_WORKER_MULTIPROC_METHOD"


@pytest.fixture(autouse=True)
def start_method_undone(monkeypatch) -> None:
    """Building a config writes the start method into os.environ, which the engines later tests start would
    inherit: each test's change is undone after it."""
    monkeypatch.setenv(START_METHOD_VARIABLE, "recorded")
    monkeypatch.delenv(START_METHOD_VARIABLE)


@pytest.fixture(scope="module")
def tiny_llama(tiny_model_dirs) -> str:
    return str(tiny_model_dirs["LlamaForCausalLM"])


def engine_config(model: str, **engine_args):
    from vllm.engine.arg_utils import EngineArgs

    return EngineArgs(model=model, skip_tokenizer_init=True, max_model_len=128, **engine_args).create_engine_config()


@pytest.mark.parametrize(
    ("dtype", "served_as"),
    [
        ("auto", "torch.bfloat16"),
        ("float32", "torch.float32"),
        ("float16", "torch.float16"),
        ("bfloat16", "torch.bfloat16"),
    ],
)
def test_the_dtype_is_honoured_and_auto_follows_vllms_cpu_backend(tiny_llama, dtype: str, served_as: str) -> None:
    """The tiny checkpoint is float32; vLLM's CPU backend serves a float32 checkpoint as bfloat16 at auto."""
    config = engine_config(tiny_llama, dtype=dtype)
    assert config.parallel_config.worker_cls == "vms_plugin.worker.worker.MindSporeWorker"
    assert str(config.model_config.dtype) == served_as


@pytest.mark.parametrize(
    ("engine_args", "message"),
    [
        (
            {"speculative_config": {"method": "eagle", "model": "SELF", "num_speculative_tokens": 2}},
            r"by prompt lookup \('ngram'\) or with a draft model \('draft_model'\); --speculative-config method "
            "'eagle' is not supported",
        ),
        ({"enable_prompt_embeds": True}, "does not support prompt embeddings; remove --enable-prompt-embeds"),
        (
            {"runner": "pooling", "convert": "classify"},
            r"embeddings \(--runner pooling --convert embed\); --runner pooling --convert classify is not supported",
        ),
        ({"kv_cache_dtype": "fp8"}, "KV cache in the model's dtype .--dtype.; --kv-cache-dtype fp8 is not supported"),
        ({"pipeline_parallel_size": 2}, "does not support pipeline parallelism; remove --pipeline-parallel-size 2"),
    ],
    ids=[
        "EAGLE speculation",
        "prompt embeddings",
        "classify",
        "fp8 KV cache",
        "pipeline parallel",
    ],
)
def test_features_the_runner_lacks_are_refused_by_flag(tiny_llama, engine_args: dict, message: str) -> None:
    if "speculative_config" in engine_args:  # the model itself as its draft model
        engine_args = {"speculative_config": {**engine_args["speculative_config"], "model": tiny_llama}}
    with pytest.raises(ValueError, match=message):
        engine_config(tiny_llama, **engine_args)


@pytest.mark.parametrize("chosen", [None, "fork", "spawn"])
def test_a_start_method_chosen_before_stands_and_none_means_spawn(tiny_llama, monkeypatch, chosen) -> None:
    """vLLM's CPU platform forces spawn; `vms serve` chooses fork for its engine (engine_command.py)."""
    if chosen is not None:
        monkeypatch.setenv(START_METHOD_VARIABLE, chosen)
    engine_config(tiny_llama)
    assert os.environ[START_METHOD_VARIABLE] == (chosen or "spawn")


@pytest.mark.parametrize("method", ["int8_per_channel_weight_only", "int8_per_channel"])
def test_int8_quantization_methods_are_accepted_by_name(tiny_llama, method: str) -> None:
    """vLLM's own W8A16 shorthand (which vLLM allows with 16-bit dtypes only), and W8A8 `int8_per_channel`, which
    vms registers in vLLM's quantization registry."""
    from vllm.model_executor.layers.quantization import QUANTIZATION_METHODS

    config = engine_config(tiny_llama, quantization=method, dtype="bfloat16")
    assert config.model_config.quantization == method
    assert method in QUANTIZATION_METHODS


def test_quantize_lm_head_in_the_additional_config_makes_the_output_projection_int8(tiny_llama) -> None:
    from vms_plugin.quantization import model_int8_scheme

    config = engine_config(tiny_llama, quantization="int8_per_channel", additional_config={"quantize_lm_head": True})
    assert model_int8_scheme(config).name == "W8A8 with int8 lm_head"
    assert model_int8_scheme(engine_config(tiny_llama, quantization="int8_per_channel")).name == "W8A8"


@pytest.mark.parametrize(
    ("engine_args", "message"),
    [
        ({}, "quantize_lm_head quantizes the output projection of an int8 model; add --quantization"),
        ({"quantization": "int8_per_channel"}, "quantize_lm_head is 'yes'; allowed: true or false"),
    ],
    ids=["no int8 weights", "not a boolean"],
)
def test_quantize_lm_head_without_int8_weights_or_a_boolean_stops_start_up(tiny_llama, engine_args, message) -> None:
    value = "yes" if engine_args else True
    with pytest.raises(ValueError, match=message):
        engine_config(tiny_llama, additional_config={"quantize_lm_head": value}, **engine_args)


def test_a_compressed_tensors_checkpoint_is_recognised(w8a8_model_dir) -> None:
    config = engine_config(str(w8a8_model_dir), dtype="float32")
    assert config.model_config.quantization == "compressed-tensors"


def test_an_unsupported_quantization_method_stops_start_up_naming_it(tiny_llama) -> None:
    with pytest.raises(ValueError, match="quantization method 'fp8_per_tensor' is not supported: vms serves"):
        engine_config(tiny_llama, quantization="fp8_per_tensor")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"weights": {"num_bits": 4}}, "quantizes weights to int4, not int8"),
        ({"weights": {"symmetric": False}}, "quantizes weights asymmetrically"),
        ({"weights": {"strategy": "group", "group_size": 128}}, "scales weights per group, not per channel"),
        ({"input_activations": {"dynamic": False, "strategy": "tensor"}}, "has static activation scales"),
        ({"format": "pack-quantized"}, "has format 'pack-quantized', not int-quantized"),
    ],
    ids=["int4 weights", "asymmetric", "group scales", "static activations", "packed format"],
)
def test_a_checkpoint_quantization_vms_cannot_serve_stops_start_up_naming_it(
    w8a8_model_dir, tmp_path, change: dict, message: str
) -> None:
    import json

    for source in w8a8_model_dir.iterdir():
        (tmp_path / source.name).symlink_to(source)
    config = json.loads((w8a8_model_dir / "config.json").read_text())
    group = config["quantization_config"]["config_groups"]["group_0"]
    for key, value in change.items():
        if isinstance(value, dict):
            group[key].update(value)
        else:
            group[key] = value
    (tmp_path / "config.json").unlink()
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=f"compressed-tensors quantization_config {message}") as raised:
        engine_config(str(tmp_path), dtype="float32")
    # one line, naming what the checkpoint does and what vms serves (pydantic adds lines of its own around it)
    (line,) = [line for line in str(raised.value).splitlines() if message in line]
    assert "vms serves --quantization int8_per_channel_weight_only (W8A16)" in line


def test_the_readme_table_of_engine_features_is_the_platforms_list(tiny_llama) -> None:
    """The table is the list the platform refuses from; a default configuration asks for nothing refused."""
    import re
    from pathlib import Path

    from vms_plugin.engine_features import FEATURES, features_table

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    markers = r"<!-- engine-features-table:start -->\n(.*?)\n<!-- engine-features-table:end -->"
    section = re.search(markers, readme, re.S)
    assert section, "README.md lost its engine-features-table markers"
    assert section.group(1) == features_table(), "README's table drifted: paste engine_features.features_table()"
    config = engine_config(tiny_llama)
    assert all(feature.refusal(config) is None for feature in FEATURES if not feature.served)
