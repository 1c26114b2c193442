"""Llama in MindSpore: config, attention, MLP, decoder layer, model and causal-LM head, top to bottom.

Weights keep Hugging Face's names except two stacked projections that save matmuls per layer:
q/k/v -> qkv_proj and gate/up -> gate_up_proj (see `LlamaForCausalLM.stacked_params`).
"""

from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from vms_plugin.layers.embedding import Embedding
from vms_plugin.layers.linear import Linear
from vms_plugin.layers.norm import RMSNorm
from vms_plugin.layers.rope_scaling import RopeParameters
from vms_plugin.layers.rotary import rotary_tensors
from vms_plugin.ops import layer_ops
from vms_plugin.ops.interface import StepInputs


@dataclass(frozen=True)
class LlamaArgs:
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope: RopeParameters = field(default_factory=RopeParameters)
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = False
    qkv_bias: bool = False  # Qwen2: biases on q/k/v only
    o_bias: bool = False
    qk_norm: bool = False  # Qwen3: RMSNorm over each head of q and k before rotary

    @classmethod
    def from_hf_config(cls, config: dict[str, Any], **overrides: bool) -> "LlamaArgs":
        """Read a Hugging Face config.json; `overrides` set the architecture flags the config does not carry."""
        heads = config["num_attention_heads"]
        return cls(
            hidden_size=config["hidden_size"],
            intermediate_size=config["intermediate_size"],
            num_hidden_layers=config["num_hidden_layers"],
            num_attention_heads=heads,
            num_key_value_heads=config.get("num_key_value_heads", heads),
            vocab_size=config["vocab_size"],
            head_dim=config.get("head_dim") or config["hidden_size"] // heads,
            rms_norm_eps=config.get("rms_norm_eps", 1e-6),
            rope=RopeParameters.from_hf_config(config),
            max_position_embeddings=config.get("max_position_embeddings", 4096),
            tie_word_embeddings=config.get("tie_word_embeddings", False),
            qkv_bias=config.get("attention_bias", False),
            o_bias=config.get("attention_bias", False),
        ).with_flags(**overrides)

    def with_flags(self, **flags: bool) -> "LlamaArgs":
        return replace(self, **flags)


class Attention(nn.Cell):
    def __init__(self, args: LlamaArgs, layer_index: int) -> None:
        super().__init__()
        self.layer_index = layer_index
        self.heads = (args.num_attention_heads, args.num_key_value_heads, args.head_dim)  # (H, K, D)
        self.q_size = args.num_attention_heads * args.head_dim
        self.kv_size = args.num_key_value_heads * args.head_dim
        self.scale = args.head_dim**-0.5
        self.qkv_proj = Linear(args.hidden_size, self.q_size + 2 * self.kv_size, bias=args.qkv_bias)
        self.o_proj = Linear(self.q_size, args.hidden_size, bias=args.o_bias)
        self.q_norm = RMSNorm(args.head_dim, args.rms_norm_eps) if args.qk_norm else None
        self.k_norm = RMSNorm(args.head_dim, args.rms_norm_eps) if args.qk_norm else None
        self.k_cache: Parameter | None = None
        self.v_cache: Parameter | None = None
        self.ops = layer_ops()

    def allocate_kv_cache(self, num_blocks: int, block_size: int) -> None:
        """K and V caches for `num_blocks` of vLLM's blocks, in the layout the device's ops use."""
        _, kv_heads, head_dim = self.heads
        shape = self.ops.kv_cache_shape(num_blocks * block_size, block_size, kv_heads, head_dim)
        # Graph mode needs every parameter name to be unique across the model.
        self.k_cache = Parameter(ops.zeros(shape, ms.float32), name=f"k_cache.{self.layer_index}", requires_grad=False)
        self.v_cache = Parameter(ops.zeros(shape, ms.float32), name=f"v_cache.{self.layer_index}", requires_grad=False)

    def copy_kv_slots(self, src: np.ndarray, dst: np.ndarray) -> None:
        """Copy token slots `src` to `dst` for every KV head."""
        self.ops.copy_slots(self.k_cache, self.v_cache, Tensor(src.astype(np.int32)), Tensor(dst.astype(np.int32)))

    def qk_norm_weights(self) -> tuple[Parameter, Parameter, float] | None:
        return None if self.q_norm is None else (self.q_norm.weight, self.k_norm.weight, self.q_norm.eps)

    def construct(self, x: ms.Tensor, rotary: tuple[ms.Tensor, ms.Tensor], inputs: StepInputs) -> ms.Tensor:
        qkv = self.qkv_proj(x)
        q = self.ops.rope_and_cache(qkv, rotary, self.k_cache, self.v_cache, inputs, self.heads, self.qk_norm_weights())
        out = self.ops.paged_attention(q, self.k_cache, self.v_cache, inputs, self.heads, self.scale)
        return self.o_proj(out)


class MLP(nn.Cell):
    def __init__(self, args: LlamaArgs) -> None:
        super().__init__()
        self.gate_up_proj = Linear(args.hidden_size, 2 * args.intermediate_size)
        self.down_proj = Linear(args.intermediate_size, args.hidden_size)
        self.ops = layer_ops()

    def construct(self, x: ms.Tensor) -> ms.Tensor:
        return self.down_proj(self.ops.silu_mul(self.gate_up_proj(x)))


class DecoderLayer(nn.Cell):
    """Returns (output, residual) unsummed: the sum happens in the next norm's kernel (layers/norm.py)."""

    def __init__(self, args: LlamaArgs, layer_index: int) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(args.hidden_size, args.rms_norm_eps)
        self.self_attn = Attention(args, layer_index)
        self.post_attention_layernorm = RMSNorm(args.hidden_size, args.rms_norm_eps)
        self.mlp = MLP(args)

    def construct(
        self, x: ms.Tensor, residual: ms.Tensor | None, rotary: tuple[ms.Tensor, ms.Tensor], inputs: StepInputs
    ) -> tuple[ms.Tensor, ms.Tensor]:
        if residual is None:
            x, residual = self.input_layernorm(x), x
        else:
            x, residual = self.input_layernorm(x, residual)
        x, residual = self.post_attention_layernorm(self.self_attn(x, rotary, inputs), residual)
        return self.mlp(x), residual


class LlamaModel(nn.Cell):
    def __init__(self, args: LlamaArgs) -> None:
        super().__init__()
        self.embed_tokens = Embedding(args.vocab_size, args.hidden_size)
        self.layers = nn.CellList([DecoderLayer(args, index) for index in range(args.num_hidden_layers)])
        self.norm = RMSNorm(args.hidden_size, args.rms_norm_eps)
        self.rotary = rotary_tensors(args.head_dim, args.max_position_embeddings, args.rope)

    def construct(self, input_ids: ms.Tensor, inputs: StepInputs) -> tuple[ms.Tensor, ms.Tensor]:
        """The last layer's (output, residual); their sum, normalised, is the final hidden state."""
        h, residual = self.embed_tokens(input_ids), None
        for layer in self.layers:
            h, residual = layer(h, residual, self.rotary, inputs)
        return h, residual


class LlamaForCausalLM(nn.Cell):
    # Checkpoint names (suffixes) concatenated, in order, into one of our parameters.
    stacked_params: ClassVar[dict[str, tuple[str, ...]]] = {
        "self_attn.qkv_proj.weight_t": (
            "self_attn.q_proj.weight",
            "self_attn.k_proj.weight",
            "self_attn.v_proj.weight",
        ),
        "self_attn.qkv_proj.bias": ("self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"),
        "mlp.gate_up_proj.weight_t": ("mlp.gate_proj.weight", "mlp.up_proj.weight"),
    }

    @classmethod
    def from_hf_config(cls, config: dict[str, Any]) -> "LlamaForCausalLM":
        return cls(LlamaArgs.from_hf_config(config))

    def __init__(self, args: LlamaArgs) -> None:
        super().__init__()
        self.args = args
        self.model = LlamaModel(args)
        self.lm_head = None if args.tie_word_embeddings else Linear(args.hidden_size, args.vocab_size)
        self.logits_matmul = ops.MatMul(transpose_b=True)

    def attention_layers(self) -> list[Attention]:
        return [layer.self_attn for layer in self.model.layers]

    def construct(self, input_ids: ms.Tensor, inputs: StepInputs, logits_index: ms.Tensor) -> ms.Tensor:
        """Logits [S, vocab] for the tokens at `logits_index` (the last token of each sampling request)."""
        h, residual = self.model(input_ids, inputs)
        hidden, _ = self.model.norm(h[logits_index], residual[logits_index])
        if self.lm_head is None:
            return self.logits_matmul(hidden, self.model.embed_tokens.weight)
        return self.lm_head(hidden)
