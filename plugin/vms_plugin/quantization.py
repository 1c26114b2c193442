"""The int8 schemes vms serves, chosen by vLLM's `--quantization` or by a checkpoint's `quantization_config`.

- `int8_per_channel_weight_only` (vLLM's own name): a float checkpoint quantized at load to int8 weights, one
  scale per output channel; activations stay float (W8A16).
- `int8_per_channel` (registered here through vLLM's quantization registry): the same weights, and each linear
  layer's input quantized to int8 per token at run time (W8A8), as vLLM's `fp8_per_channel` does for fp8.
- `compressed-tensors` checkpoints holding int8 weights (per channel or per tensor, symmetric) with dynamic int8
  activations or none: the format W8A8 models for vLLM and Ascend ship in (llm-compressor's W8A8 recipe).
Decoder layers' linear weights are int8; embeddings and the output projection keep the model's dtype, as those
checkpoints keep them (their `ignore` lists lm_head), unless `--additional-config '{"quantize_lm_head": true}'`
quantizes the output projection at load too, one scale per vocabulary row, so that a tied embedding stays one
int8 table (a decode step of SmolLM2-135M reads 28 MB there instead of 56 in bfloat16). Anything else stops
start-up with one line naming it.
"""

from dataclasses import replace
from typing import Any

import torch
from vllm.model_executor.layers.quantization import register_quantization_config
from vllm.model_executor.layers.quantization.base_config import QuantizationConfig

from vms_plugin.layers.int8 import Int8Scheme

WEIGHT_ONLY = "int8_per_channel_weight_only"
PER_CHANNEL = "int8_per_channel"
COMPRESSED_TENSORS = "compressed-tensors"
LM_HEAD_OPTION = "quantize_lm_head"  # a key of vLLM's --additional-config
SUPPORTED_METHODS = (WEIGHT_ONLY, PER_CHANNEL, COMPRESSED_TENSORS)
_SERVED = (
    f"vms serves --quantization {WEIGHT_ONLY} (W8A16), {PER_CHANNEL} (W8A8) and {COMPRESSED_TENSORS} "
    "checkpoints with int8 weights"
)


class UnsupportedQuantization(ValueError):
    pass


def int8_scheme(method: str | None, checkpoint_config: dict[str, Any] | None) -> Int8Scheme | None:
    """The scheme for vLLM's resolved quantization method (None: not quantized); raises UnsupportedQuantization."""
    if method is None:
        return None
    if method == WEIGHT_ONLY:
        return Int8Scheme(int8_activations=False)
    if method == PER_CHANNEL:
        return Int8Scheme(int8_activations=True)
    if method == COMPRESSED_TENSORS:
        return _compressed_tensors_scheme(checkpoint_config or {})
    raise unsupported_method(method)


def model_int8_scheme(vllm_config: Any) -> Int8Scheme | None:
    """The scheme of the model vLLM is configured to serve: its quantization method, the checkpoint's config and
    --additional-config's quantize_lm_head."""
    model_config = vllm_config.model_config
    scheme = int8_scheme(model_config.quantization, checkpoint_quantization_config(model_config.hf_config))
    additional = vllm_config.additional_config
    quantize_lm_head = additional.get(LM_HEAD_OPTION, False) if isinstance(additional, dict) else False
    if not isinstance(quantize_lm_head, bool):
        raise UnsupportedQuantization(
            f"--additional-config {LM_HEAD_OPTION} is {quantize_lm_head!r}; allowed: true or false"
        )
    if not quantize_lm_head:
        return scheme
    if scheme is None:
        raise UnsupportedQuantization(
            f"--additional-config {LM_HEAD_OPTION} quantizes the output projection of an int8 model; add "
            f"--quantization {WEIGHT_ONLY} or {PER_CHANNEL}, or serve an int8 checkpoint"
        )
    return replace(scheme, lm_head=True)


def unsupported_method(method: str) -> UnsupportedQuantization:
    return UnsupportedQuantization(f"quantization method {method!r} is not supported: {_SERVED}")


def checkpoint_quantization_config(hf_config: Any) -> dict[str, Any] | None:
    """The checkpoint's quantization config as vLLM reads it (compressed-tensors may call it compression_config)."""
    return getattr(hf_config, "quantization_config", None) or getattr(hf_config, "compression_config", None)


def _refuse(problem: str) -> UnsupportedQuantization:
    return UnsupportedQuantization(
        f"this checkpoint's compressed-tensors quantization_config {problem}; {_SERVED} (symmetric, per channel or "
        "tensor), with no activation quantization or dynamic int8 per token"
    )


def _int8(args: dict[str, Any], what: str) -> None:
    if args.get("type") != "int" or args.get("num_bits") != 8:
        raise _refuse(f"quantizes {what} to {args.get('type')}{args.get('num_bits')}, not int8")
    if not args.get("symmetric", True):
        raise _refuse(f"quantizes {what} asymmetrically (with zero points)")


def _compressed_tensors_scheme(config: dict[str, Any]) -> Int8Scheme:
    groups = config.get("config_groups") or {}
    if len(groups) != 1:
        raise _refuse(f"has {len(groups)} config groups, not one")
    group = next(iter(groups.values()))
    quant_format = group.get("format") or config.get("format")
    if quant_format not in ("int-quantized", "naive-quantized"):
        raise _refuse(f"has format {quant_format!r}, not int-quantized")
    if group.get("targets") != ["Linear"]:
        raise _refuse(f"targets {group.get('targets')}, not every Linear layer")
    ignored = [name for name in config.get("ignore") or [] if not name.endswith("lm_head")]
    if ignored:
        raise _refuse(f"leaves layers other than lm_head unquantized ({', '.join(ignored)})")
    weights = group.get("weights") or {}
    _int8(weights, "weights")
    if weights.get("strategy") not in ("channel", "tensor") or weights.get("dynamic"):
        raise _refuse(f"scales weights per {weights.get('strategy')}, not per channel or tensor")
    if group.get("output_activations") or config.get("kv_cache_scheme") or config.get("sparsity_config"):
        raise _refuse("quantizes outputs or the KV cache, or is sparse")
    activations = group.get("input_activations")
    if activations is not None:
        _int8(activations, "activations")
        if not activations.get("dynamic"):
            raise _refuse("has static activation scales")
    return Int8Scheme(int8_activations=activations is not None)


class Int8PerChannelConfig(QuantizationConfig):
    """`--quantization int8_per_channel` for vLLM's config checks; vms's model runner reads the method's name and
    quantizes its own layers (models/weights.py), so vLLM's layers never ask this config for a method."""

    def get_name(self) -> str:
        return PER_CHANNEL

    def get_supported_act_dtypes(self) -> list[torch.dtype]:
        return [torch.float32, torch.float16, torch.bfloat16]

    @classmethod
    def get_min_capability(cls) -> int:
        return 0

    @staticmethod
    def get_config_filenames() -> list[str]:
        return []  # quantized at load from a float checkpoint: nothing to read

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "Int8PerChannelConfig":
        return cls()

    def get_quant_method(self, layer: torch.nn.Module, prefix: str) -> None:
        return None


def register() -> None:
    register_quantization_config(PER_CHANNEL)(Int8PerChannelConfig)
