"""vLLM's engine features as vms serves them: each served, or refused at start-up with one line naming its flag.

The platform refuses from this list (platform.py's refuse_unsupported_features) and the README's table is made from
it (`features_table`, checked by tests/unit/test_platform.py), so the two cannot drift apart.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # vllm.config imports the current platform while it initialises: no runtime import here
    from vllm.config import VllmConfig


@dataclass(frozen=True)
class EngineFeature:
    name: str
    flags: str  # vLLM's flags that ask for it
    note: str  # how vms serves it, or why it does not yet
    # A refused feature: the one-line refusal when a configuration asks for it, else None.
    refusal: Callable[["VllmConfig"], str | None] | None = None

    @property
    def served(self) -> bool:
        return self.refusal is None


def _speculative(config: "VllmConfig") -> str | None:
    method = None if config.speculative_config is None else config.speculative_config.method
    if method not in (None, "ngram", "draft_model"):
        return (
            f"vms_plugin proposes speculative tokens by prompt lookup ('ngram') or with a draft model ('draft_model');"
            f" --speculative-config method {method!r} is not supported"
        )
    return None


def _prompt_embeds(config: "VllmConfig") -> str | None:
    if config.model_config is not None and config.model_config.enable_prompt_embeds:
        return "vms_plugin does not support prompt embeddings; remove --enable-prompt-embeds"
    return None


def _pooling_other_than_embeddings(config: "VllmConfig") -> str | None:
    model = config.model_config
    if model is None or model.runner_type == "generate":
        return None
    if model.runner_type != "pooling" or model.convert_type not in ("embed", "none"):
        return (
            f"vms_plugin serves generative models and embeddings (--runner pooling --convert embed); --runner "
            f"{model.runner_type} --convert {model.convert_type} is not supported"
        )
    return None


def _kv_cache_dtype(config: "VllmConfig") -> str | None:
    dtype = config.cache_config.cache_dtype
    if dtype != "auto":
        return (
            f"vms_plugin keeps the KV cache in the model's dtype (--dtype); --kv-cache-dtype {dtype} is not "
            "supported (leave it at auto)"
        )
    return None


def _pipeline_parallel(config: "VllmConfig") -> str | None:
    size = config.parallel_config.pipeline_parallel_size
    if size > 1:
        return (
            f"vms_plugin does not support pipeline parallelism; remove --pipeline-parallel-size {size} "
            "(--tensor-parallel-size splits a model over ranks)"
        )
    return None


FEATURES: tuple[EngineFeature, ...] = (
    EngineFeature("Continuous batching, preemption", "--max-num-seqs", "served: vLLM's scheduler, a forward a step"),
    EngineFeature("Chunked prefill", "--enable-chunked-prefill", "served, latent-attention models included"),
    EngineFeature("Prefix caching", "--enable-prefix-caching", "served, latent-attention models included"),
    EngineFeature("Sampling, logprobs, prompt logprobs", "SamplingParams", "served: vLLM's own Sampler"),
    EngineFeature("Structured outputs", "--structured-outputs-config", "served: vLLM's grammar bitmask"),
    EngineFeature("16-bit weights and KV cache", "--dtype", "served: float32, float16, bfloat16"),
    EngineFeature(
        "int8 quantization",
        "--quantization",
        "served: int8_per_channel (W8A8), int8_per_channel_weight_only, compressed-tensors int8; others refused",
    ),
    EngineFeature("Tensor parallel", "--tensor-parallel-size", "served: vLLM's multiprocessing or Ray executor"),
    EngineFeature("Expert parallel", "--enable-expert-parallel", "served on CPU: X/N whole experts per rank"),
    EngineFeature("Data parallel", "--data-parallel-size", "served: engine-core replicas behind one API server"),
    EngineFeature("Pipeline parallel", "--pipeline-parallel-size", "refused", _pipeline_parallel),
    EngineFeature(
        "Speculative decoding",
        "--speculative-config",
        "served: `ngram` (prompt lookup) and `draft_model`, verified by vLLM's rejection sampler; EAGLE, MTP refused",
        _speculative,
    ),
    EngineFeature(
        "LoRA adapters",
        "--enable-lora, --lora-modules",
        "served on dense models: PEFT adapters of q/k/v/o and gate/up/down, mixed in a batch, loaded at run time",
    ),
    EngineFeature("Prompt embeddings", "--enable-prompt-embeds", "refused", _prompt_embeds),
    EngineFeature(
        "Embeddings",
        "--runner pooling --convert embed",
        "served: vLLM's pooler on the final hidden states (/v1/embeddings)",
    ),
    EngineFeature(
        "Other pooling (classify, reward)", "--convert classify / reward", "refused", _pooling_other_than_embeddings
    ),
    EngineFeature("Quantized KV cache", "--kv-cache-dtype", "refused: the cache is kept in --dtype", _kv_cache_dtype),
)


def refusal(config: "VllmConfig") -> str | None:
    """The first refused feature the configuration asks for, as its one-line message; None when all are served."""
    for feature in FEATURES:
        message = None if feature.refusal is None else feature.refusal(config)
        if message is not None:
            return message
    return None


def features_table() -> str:
    """The README's Markdown table of the features."""
    rows = ["| vLLM feature | Flag | vms |", "| --- | --- | --- |"]
    rows += [f"| {f.name} | `{f.flags}` | {f.note} |" for f in FEATURES]
    return "\n".join(rows)
