"""Llama in MindSpore: config, attention, MLP, decoder layer, model and causal-LM head, top to bottom.

Weights keep Hugging Face's names except two stacked projections that save matmuls per layer:
q/k/v -> qkv_proj and gate/up -> gate_up_proj (see `LlamaForCausalLM.stacked_params`).
"""

from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, mint, nn, ops

from vms_plugin.attention.paged import AttentionInputs, paged_attention
from vms_plugin.attention.paged_inputs import HeadLayout
from vms_plugin.layers.embedding import Embedding
from vms_plugin.layers.linear import Linear
from vms_plugin.layers.norm import RMSNorm
from vms_plugin.layers.rope_scaling import RopeParameters
from vms_plugin.layers.rotary import RotaryEmbedding, apply_rotary


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
        self.num_heads = args.num_attention_heads
        self.num_kv_heads = args.num_key_value_heads
        self.head_dim = args.head_dim
        self.q_size = self.num_heads * self.head_dim
        self.kv_size = self.num_kv_heads * self.head_dim
        self.scale = self.head_dim**-0.5
        self.qkv_proj = Linear(args.hidden_size, self.q_size + 2 * self.kv_size, bias=args.qkv_bias)
        self.o_proj = Linear(self.q_size, args.hidden_size, bias=args.o_bias)
        self.q_norm = RMSNorm(self.head_dim, args.rms_norm_eps) if args.qk_norm else None
        self.k_norm = RMSNorm(self.head_dim, args.rms_norm_eps) if args.qk_norm else None
        self.k_cache: Parameter | None = None
        self.v_cache: Parameter | None = None
        self.num_slots = 0

    def allocate_kv_cache(self, num_slots: int) -> None:
        """Head-major caches, [KVH * num_slots, D] (see attention/paged.py)."""
        shape = (self.num_kv_heads * num_slots, self.head_dim)
        self.num_slots = num_slots
        # Graph mode needs every parameter name to be unique across the model.
        self.k_cache = Parameter(ops.zeros(shape, ms.float32), name=f"k_cache.{self.layer_index}", requires_grad=False)
        self.v_cache = Parameter(ops.zeros(shape, ms.float32), name=f"v_cache.{self.layer_index}", requires_grad=False)

    def copy_kv_slots(self, src: np.ndarray, dst: np.ndarray) -> None:
        """Copy token slots `src` to `dst` for every KV head."""
        layout = self.head_layout()
        src_rows, dst_rows = (Tensor(layout.head_rows(slots).astype(np.int32)) for slots in (src, dst))
        ops.scatter_update(self.k_cache, dst_rows, ops.gather(self.k_cache, src_rows, 0))
        ops.scatter_update(self.v_cache, dst_rows, ops.gather(self.v_cache, src_rows, 0))

    def head_layout(self) -> HeadLayout:
        return HeadLayout(self.num_heads, self.num_kv_heads, self.num_slots)

    def construct(self, x: ms.Tensor, rotary: tuple[ms.Tensor, ...], inputs: AttentionInputs) -> ms.Tensor:
        qkv = self.qkv_proj(x)
        # q and k heads are normalised and rotated together: one set of ops instead of two.
        qk = qkv[:, : self.q_size + self.kv_size].reshape(-1, self.num_heads + self.num_kv_heads, self.head_dim)
        if self.q_norm is not None:
            qk = mint.cat([self.q_norm(qk[:, : self.num_heads]), self.k_norm(qk[:, self.num_heads :])], dim=1)
        qk = apply_rotary(qk, *rotary)
        q, k = qk[:, : self.num_heads], qk[:, self.num_heads :]
        v = qkv[:, self.q_size + self.kv_size :].reshape(-1, self.num_kv_heads, self.head_dim)
        out = paged_attention(q, k, v, self.k_cache, self.v_cache, inputs, self.scale)
        return self.o_proj(out)


class MLP(nn.Cell):
    def __init__(self, args: LlamaArgs) -> None:
        super().__init__()
        self.intermediate_size = args.intermediate_size
        self.gate_up_proj = Linear(args.hidden_size, 2 * args.intermediate_size)
        self.down_proj = Linear(args.intermediate_size, args.hidden_size)

    def construct(self, x: ms.Tensor) -> ms.Tensor:
        gate_up = self.gate_up_proj(x)
        gate, up = gate_up[:, : self.intermediate_size], gate_up[:, self.intermediate_size :]
        return self.down_proj(mint.nn.functional.silu(gate) * up)


class DecoderLayer(nn.Cell):
    def __init__(self, args: LlamaArgs, layer_index: int) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(args.hidden_size, args.rms_norm_eps)
        self.self_attn = Attention(args, layer_index)
        self.post_attention_layernorm = RMSNorm(args.hidden_size, args.rms_norm_eps)
        self.mlp = MLP(args)

    def construct(self, x: ms.Tensor, rotary: tuple[ms.Tensor, ...], inputs: AttentionInputs) -> ms.Tensor:
        h = x + self.self_attn(self.input_layernorm(x), rotary, inputs)
        return h + self.mlp(self.post_attention_layernorm(h))


class LlamaModel(nn.Cell):
    def __init__(self, args: LlamaArgs) -> None:
        super().__init__()
        self.embed_tokens = Embedding(args.vocab_size, args.hidden_size)
        self.layers = nn.CellList([DecoderLayer(args, index) for index in range(args.num_hidden_layers)])
        self.norm = RMSNorm(args.hidden_size, args.rms_norm_eps)
        self.rotary = RotaryEmbedding(args.head_dim, args.max_position_embeddings, args.rope)
        self.num_rotated_heads = args.num_attention_heads + args.num_key_value_heads  # q and k, rotated together

    def construct(self, input_ids: ms.Tensor, positions: ms.Tensor, inputs: AttentionInputs) -> ms.Tensor:
        h = self.embed_tokens(input_ids)
        rotary = self.rotary(positions, self.num_rotated_heads)  # looked up once, applied by every layer
        for layer in self.layers:
            h = layer(h, rotary, inputs)
        return h


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

    def fold_norm_weights(self) -> None:
        """After loading: each layer's two norms feed one linear each (qkv, gate_up), so their weights fold in."""
        for layer in self.model.layers:
            layer.input_layernorm.fold_into(layer.self_attn.qkv_proj)
            layer.post_attention_layernorm.fold_into(layer.mlp.gate_up_proj)

    def attention_layers(self) -> list[Attention]:
        return [layer.self_attn for layer in self.model.layers]

    def construct(
        self, input_ids: ms.Tensor, positions: ms.Tensor, inputs: AttentionInputs, logits_index: ms.Tensor
    ) -> ms.Tensor:
        """Logits [S, vocab] for the tokens at `logits_index` (the last token of each sampling request)."""
        hidden = self.model(input_ids, positions, inputs)[logits_index]
        hidden = self.model.norm(hidden)
        if self.lm_head is None:
            return self.logits_matmul(hidden, self.model.embed_tokens.weight)
        return self.lm_head(hidden)
