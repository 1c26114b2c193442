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
            {"speculative_config": {"method": "ngram", "num_speculative_tokens": 2, "prompt_lookup_max": 3}},
            "does not support speculative decoding; remove --speculative-config",
        ),
        ({"enable_lora": True}, "does not support LoRA adapters; remove --enable-lora"),
        ({"enable_prompt_embeds": True}, "does not support prompt embeddings; remove --enable-prompt-embeds"),
        ({"runner": "pooling"}, "runs generative models only; --runner pooling is not supported"),
        ({"kv_cache_dtype": "fp8"}, "KV cache in the model's dtype .--dtype.; --kv-cache-dtype fp8 is not supported"),
    ],
    ids=["speculative decoding", "LoRA", "prompt embeddings", "pooling", "fp8 KV cache"],
)
def test_features_the_runner_lacks_are_refused_by_flag(tiny_llama, engine_args: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        engine_config(tiny_llama, **engine_args)


@pytest.mark.parametrize("chosen", [None, "fork", "spawn"])
def test_a_start_method_chosen_before_stands_and_none_means_spawn(tiny_llama, monkeypatch, chosen) -> None:
    """vLLM's CPU platform forces spawn; `vms serve` chooses fork for its engine (engine_command.py)."""
    if chosen is not None:
        monkeypatch.setenv(START_METHOD_VARIABLE, chosen)
    engine_config(tiny_llama)
    assert os.environ[START_METHOD_VARIABLE] == (chosen or "spawn")
