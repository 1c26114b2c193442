"""Llama in MindSpore: config, attention, MLP, decoder layer, model and causal-LM head, top to bottom.

Weights keep Hugging Face's names except two stacked projections that save matmuls per layer:
q/k/v -> qkv_proj and gate/up -> gate_up_proj (see `LlamaForCausalLM.checkpoint_sources`).
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from vms_plugin.layers.embedding import Embedding
from vms_plugin.layers.experts import EXPERT_WEIGHTS, ExpertArgs, ExpertShare, RoutedExperts
from vms_plugin.layers.int8 import Int8Scheme
from vms_plugin.layers.latent_attention import LatentArgs, LatentAttention
from vms_plugin.layers.linear import Linear
from vms_plugin.layers.lora import LayerAdapters, TargetShape
from vms_plugin.layers.norm import RMSNorm
from vms_plugin.layers.parallel import Part, Partition, SingleRank, TensorParallelGroup
from vms_plugin.layers.precision import storage_dtype
from vms_plugin.layers.rope_scaling import RopeParameters
from vms_plugin.layers.rotary import rotary_tables
from vms_plugin.ops import layer_ops
from vms_plugin.ops.interface import DecoderStack, DecoderWeights, ModelEnds, StepInputs


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
    dtype: str = "float32"  # storage type of linear weights, embeddings and KV cache (layers/precision.py)
    int8: Int8Scheme | None = None  # int8 decoder-layer weights; embeddings and lm_head stay `dtype` unless lm_head
    experts: ExpertArgs | None = None  # mixture of experts: which layers' MLPs are routed experts, and their sizes
    latent: LatentArgs | None = None  # multi-head latent attention (DeepSeek) in place of Llama's; head_dim is its R

    @classmethod
    def from_hf_config(
        cls, config: dict[str, Any], dtype: str = "float32", int8: Int8Scheme | None = None, **overrides: bool
    ) -> "LlamaArgs":
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
            qk_norm=config.get("use_qk_norm", False),  # GLM's switch; Qwen3 always has them (its flag)
            dtype=dtype,
            int8=int8,
        ).with_flags(**overrides)

    def with_flags(self, **flags: bool) -> "LlamaArgs":
        return replace(self, **flags)

    @property
    def layer_dtype(self) -> str:
        """Storage type of the decoder layers' linear weights."""
        return "int8" if self.int8 is not None else self.dtype

    @property
    def output_dtype(self) -> str:
        """Storage type of the output projection and the embedding (one table when tied)."""
        return "int8" if self.int8 is not None and self.int8.lm_head else self.dtype

    @property
    def int8_activations(self) -> bool:
        return self.int8 is not None and self.int8.int8_activations


class Attention(nn.Cell):
    """The attention's parameters and KV caches (this rank's heads); the device's decoder layers compute with
    them."""

    def __init__(self, args: LlamaArgs, layer_index: int, partition: Partition) -> None:
        super().__init__()
        self.layer_index = layer_index
        self.heads = (partition.local_heads, partition.local_kv_heads, args.head_dim)  # (H, K, D) of this rank
        q_size = partition.local_heads * args.head_dim
        kv_size = partition.local_kv_heads * args.head_dim
        self.scale = args.head_dim**-0.5
        self.qkv_proj = Linear(args.hidden_size, q_size + 2 * kv_size, bias=args.qkv_bias, dtype=args.layer_dtype)
        self.o_proj = Linear(q_size, args.hidden_size, bias=args.o_bias, dtype=args.layer_dtype)
        self.q_norm = RMSNorm(args.head_dim, args.rms_norm_eps) if args.qk_norm else None
        self.k_norm = RMSNorm(args.head_dim, args.rms_norm_eps) if args.qk_norm else None
        self.k_cache: Parameter | None = None
        self.v_cache: Parameter | None = None
        self.cache_dtype = storage_dtype(args.dtype)
        self.ops = layer_ops()

    def allocate_kv_cache(self, num_blocks: int, block_size: int) -> None:
        """K and V caches for `num_blocks` of vLLM's blocks, in the layout the device's ops use."""
        _, kv_heads, head_dim = self.heads
        shape = self.ops.kv_cache_shape(num_blocks * block_size, block_size, kv_heads, head_dim)
        # Graph mode needs every parameter name to be unique across the model.
        for name in ("k_cache", "v_cache"):
            cache = Parameter(
                ops.zeros(shape, self.cache_dtype), name=f"{name}.{self.layer_index}", requires_grad=False
            )
            setattr(self, name, cache)

    def copy_kv_slots(self, src: np.ndarray, dst: np.ndarray) -> None:
        """Copy token slots `src` to `dst` for every KV head."""
        self.ops.copy_slots(self.k_cache, self.v_cache, Tensor(src.astype(np.int32)), Tensor(dst.astype(np.int32)))


class MLP(nn.Cell):
    """SiLU(gate) * up, then down (this rank's features): the device's decoder layers compute with the parameters;
    called, it runs on its own (a dense layer beside latent attention, whose layer is not one launch)."""

    def __init__(self, args: LlamaArgs, partition: Partition) -> None:
        super().__init__()
        intermediate = partition.local_intermediate
        int8 = args.int8_activations
        self.gate_up_proj = Linear(args.hidden_size, 2 * intermediate, dtype=args.layer_dtype, int8_activations=int8)
        self.down_proj = Linear(intermediate, args.hidden_size, dtype=args.layer_dtype, int8_activations=int8)
        self.intermediate_size = intermediate

    def construct(self, x: ms.Tensor) -> ms.Tensor:
        gate, up = ops.split(self.gate_up_proj(x), self.intermediate_size, axis=-1)
        return self.down_proj(ops.silu(gate) * up)


class DecoderLayer(nn.Cell):
    """Returns (output, residual) unsummed: the sum happens in the next norm's kernel (layers/norm.py).

    On one rank the whole model is one call into the device's ops (ops/interface.py, `causal_lm`), which may run it
    as a single kernel; over several ranks each layer is two calls, each followed by the all-reduce that sums the
    ranks' partial products.
    """

    def __init__(self, args: LlamaArgs, layer_index: int, group: TensorParallelGroup, partition: Partition) -> None:
        super().__init__()
        self.group = group
        self.input_layernorm = RMSNorm(args.hidden_size, args.rms_norm_eps)
        self.self_attn = self.make_attention(args, layer_index, partition)
        self.post_attention_layernorm = RMSNorm(args.hidden_size, args.rms_norm_eps)
        self.mlp = self.make_mlp(args, layer_index, partition)
        self.eps = args.rms_norm_eps
        self.int8_activations = args.int8_activations
        self.prepared: dict = {}  # the device's values derived from the weights (DecoderWeights.prepared)
        # Reading ~17 Cell attributes costs ~40 us (1.3 ms per step of 30 layers): the weights are made again only
        # when the KV caches are (re)allocated; loading fills the same Parameters in place.
        self._weights: DecoderWeights | None = None
        self.adapters: LayerAdapters | None = None  # LoRA slots, when the engine enables adapters
        self.ops = layer_ops()

    @staticmethod
    def make_attention(args: LlamaArgs, layer_index: int, partition: Partition) -> nn.Cell:
        """Llama's attention, or multi-head latent attention where the config has it (DeepSeek)."""
        if args.latent is None:
            return Attention(args, layer_index, partition)
        return LatentAttention(
            args.hidden_size,
            partition.local_heads,
            args.latent,
            args.rope,
            args.rms_norm_eps,
            layer_index,
            args.dtype,
            args.layer_dtype,
            args.int8_activations,
        )

    @staticmethod
    def make_mlp(args: LlamaArgs, layer_index: int, partition: Partition) -> nn.Cell:
        """The layer's MLP: dense, or routed experts in the layers a mixture-of-experts config names."""
        if args.experts is None or layer_index not in args.experts.sparse_layers:
            return MLP(args, partition)
        share = partition.experts
        return RoutedExperts(args.hidden_size, share, args.layer_dtype, args.dtype, args.int8_activations)

    def weights(self) -> DecoderWeights:
        """This layer's DecoderWeights, the same object until its KV caches are reallocated."""
        attn, mlp = self.self_attn, self.mlp
        if self._weights is not None and self._weights.k_cache is attn.k_cache:
            return self._weights
        dense = isinstance(mlp, MLP)
        self._weights = DecoderWeights(
            input_norm=self.input_layernorm.weight,
            qkv=attn.qkv_proj.device_weight,
            qkv_bias=attn.qkv_proj.bias,
            q_norm=None if attn.q_norm is None else attn.q_norm.weight,
            k_norm=None if attn.k_norm is None else attn.k_norm.weight,
            o=attn.o_proj.device_weight,
            o_bias=attn.o_proj.bias,
            post_norm=self.post_attention_layernorm.weight,
            gate_up=mlp.gate_up_proj.device_weight if dense else None,
            down=mlp.down_proj.device_weight if dense else None,
            k_cache=attn.k_cache,
            v_cache=attn.v_cache,
            heads=attn.heads,
            intermediate_size=mlp.intermediate_size if dense else 0,
            eps=self.eps,
            scale=attn.scale,
            int8_activations=self.int8_activations,
            prepared=self.prepared,
            adapters=self.adapters,
        )
        return self._weights

    def construct(
        self, x: ms.Tensor, residual: ms.Tensor | None, rotary: Any, inputs: StepInputs
    ) -> tuple[ms.Tensor, ms.Tensor]:
        """One tensor-parallel rank's share of the layer, its partial sums all-reduced."""
        if isinstance(self.self_attn, LatentAttention):
            normed, residual = (self.input_layernorm(x), x) if residual is None else self.input_layernorm(x, residual)
            attention = self.self_attn(normed, rotary, inputs)
        else:
            attention, residual = self.ops.decoder_attention(self.weights(), x, residual, rotary, inputs)
        attention = self.group.all_reduce(attention)
        if isinstance(self.mlp, RoutedExperts) or isinstance(self.self_attn, LatentAttention):
            normed, residual = self.post_attention_layernorm(attention, residual)
            return self.group.all_reduce(self.mlp(normed)), residual
        out, residual = self.ops.decoder_mlp(self.weights(), attention, residual, rotary, inputs)
        return self.group.all_reduce(out), residual


class LlamaModel(nn.Cell):
    def __init__(self, args: LlamaArgs, group: TensorParallelGroup, partition: Partition) -> None:
        super().__init__()
        self.group = group
        self.embed_tokens = Embedding(partition.local_vocab, args.hidden_size, args.output_dtype, partition.first_token)
        self.layers = nn.CellList(
            [DecoderLayer(args, index, group, partition) for index in range(args.num_hidden_layers)]
        )
        self.norm = RMSNorm(args.hidden_size, args.rms_norm_eps)
        rotary_dim = args.rope.rotary_dim(args.head_dim)
        self.rotary = layer_ops().rotary(*rotary_tables(rotary_dim, args.max_position_embeddings, args.rope))
        self.ops = layer_ops()
        self._stack: DecoderStack | None = None

    def decoder_stack(self) -> DecoderStack:
        """The layers' DecoderWeights as one DecoderStack, the same object until a layer's weights change."""
        layers = tuple(layer.weights() for layer in self.layers)
        if self._stack is None or any(a is not b for a, b in zip(layers, self._stack.layers, strict=True)):
            self._stack = DecoderStack(layers, {})
        return self._stack

    def construct(self, input_ids: ms.Tensor, inputs: StepInputs) -> tuple[ms.Tensor, ms.Tensor]:
        """A tensor-parallel rank's layers, meeting the other ranks' after each half: the last layer's (output,
        residual); their sum, normalised, is the final hidden state. (One rank runs `LayerOps.causal_lm`.)"""
        h = self.group.all_reduce(self.embed_tokens(input_ids))
        residual = None
        for layer in self.layers:
            h, residual = layer(h, residual, self.rotary, inputs)
        return h, residual


class LlamaForCausalLM(nn.Cell):
    # Our parameter (suffix) -> the checkpoint tensors concatenated, in order, into it (see models/weights.py).
    checkpoint_sources: ClassVar[dict[str, tuple[str, ...]]] = {
        "self_attn.qkv_proj.device_weight": (
            "self_attn.q_proj.weight",
            "self_attn.k_proj.weight",
            "self_attn.v_proj.weight",
        ),
        "self_attn.qkv_proj.bias": ("self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"),
        "mlp.gate_up_proj.device_weight": ("mlp.gate_proj.weight", "mlp.up_proj.weight"),
    }
    # What the architecture adds to Llama that its config.json does not say (LlamaArgs' flags).
    architecture_flags: ClassVar[dict[str, bool]] = {}
    # A mixture-of-experts architecture reads which layers route to experts, and how, from its config
    # (layers/experts.py): ExpertArgs.qwen, ExpertArgs.mixtral or ExpertArgs.deepseek.
    experts_from_config: ClassVar[Callable[[dict[str, Any], int], ExpertArgs] | None] = None
    # An architecture with multi-head latent attention reads its sizes from its config (layers/latent_attention.py).
    latent_from_config: ClassVar[Callable[[dict[str, Any]], LatentArgs] | None] = None

    @classmethod
    def from_hf_config(
        cls,
        config: dict[str, Any],
        dtype: str = "float32",
        int8: Int8Scheme | None = None,
        group: TensorParallelGroup | None = None,
        expert_parallel: bool = False,
    ) -> "LlamaForCausalLM":
        """`expert_parallel`: a mixture of experts over several ranks splits its experts between them (vLLM's
        --enable-expert-parallel) rather than each expert's features."""
        args = LlamaArgs.from_hf_config(config, dtype, int8, **cls.architecture_flags)
        if cls.experts_from_config is not None:
            args = replace(args, experts=cls.experts_from_config(config, args.num_hidden_layers))
        if cls.latent_from_config is not None:
            latent = cls.latent_from_config(config)
            args = replace(args, latent=latent, head_dim=latent.rope, qkv_bias=False, o_bias=False)
        return cls(args, group or SingleRank(), expert_parallel)

    def __init__(self, args: LlamaArgs, group: TensorParallelGroup, expert_parallel: bool = False) -> None:
        super().__init__()
        self.args, self.group = args, group
        experts = (
            None if args.experts is None else ExpertShare(group.rank, group.world_size, expert_parallel, args.experts)
        )
        self.partition = Partition(
            group.rank,
            group.world_size,
            heads=args.num_attention_heads,
            kv_heads=args.num_key_value_heads,
            head_dim=args.head_dim,
            intermediate=args.intermediate_size,
            vocab=args.vocab_size,
            experts=experts,
        )
        self.model = LlamaModel(args, group, self.partition)
        # With tied embeddings the output projection is the embedding table itself (one parameter).
        vocab = self.partition.local_vocab
        self.lm_head = (
            None
            if args.tie_word_embeddings
            else Linear(args.hidden_size, vocab, dtype=args.output_dtype, int8_activations=args.int8_activations)
        )
        self.ops = layer_ops()
        self._ends: ModelEnds | None = None

    def ends(self) -> ModelEnds:
        """The embedding, final norm and output projection around the layers, made once: loading fills the same
        Parameters in place."""
        if self._ends is None:
            embedding = self.model.embed_tokens.device_weight
            self._ends = ModelEnds(
                embedding=embedding,
                final_norm=self.model.norm.weight,
                eps=self.args.rms_norm_eps,
                head=embedding if self.lm_head is None else self.lm_head.device_weight,
                vocab=self.partition.local_vocab,
                int8_activations=self.args.int8_activations,
            )
        return self._ends

    def enable_adapters(self, slots: int, rank: int) -> None:
        """LoRA slots for `slots` adapters of rank up to `rank` in every decoder layer (layers/lora.py), in this
        rank's share of each linear layer."""
        args, p = self.args, self.partition
        if args.experts is not None or args.latent is not None:
            kind = "routed experts" if args.experts is not None else "multi-head latent attention"
            raise ValueError(
                f"LoRA adapters are served for dense models; {type(self).__name__} has {kind} (leave out --enable-lora)"
            )
        hidden, q, kv = args.hidden_size, p.local_heads * args.head_dim, p.local_kv_heads * args.head_dim
        intermediate = p.local_intermediate
        for index, layer in enumerate(self.model.layers):

            def share(name: str, count: int, prefix: str = f"model.layers.{index}.") -> tuple:
                return self.checkpoint_parts(prefix + name) or (None,) * count

            shapes = {
                "qkv": TargetShape(hidden, (q, kv, kv), share("self_attn.qkv_proj.device_weight", 3)),
                "o": TargetShape(q, (hidden,), share("self_attn.o_proj.device_weight", 1)),
                "gate_up": TargetShape(hidden, (intermediate,) * 2, share("mlp.gate_up_proj.device_weight", 2)),
                "down": TargetShape(intermediate, (hidden,), share("mlp.down_proj.device_weight", 1)),
            }
            layer.adapters = LayerAdapters(shapes, slots, rank)
            layer._weights = None

    def adapter_layers(self) -> list[LayerAdapters]:
        return [layer.adapters for layer in self.model.layers if layer.adapters is not None]

    def attention_layers(self) -> list[Attention | LatentAttention]:
        return [layer.self_attn for layer in self.model.layers]

    def modules(self) -> Iterator[nn.Cell]:
        """Every cell, under torch's name for it: vLLM's in-process engine (VLLM_ENABLE_V1_MULTIPROCESSING=0) walks
        the driver model's `modules()` when the engine is collected, looking for its torch.compile wrappers."""
        return (cell for _, cell in self.cells_and_names())

    def checkpoint_parts(self, name: str) -> tuple[Part, ...] | None:
        """This rank's part of each checkpoint tensor (checkpoint_sources' order) that fills parameter `name`;
        None where the rank holds them whole."""
        p = self.partition
        if p.world_size == 1:
            return None
        if p.experts is not None and ".mlp." in name and (parts := self._expert_parts(name)) is not None:
            return parts or None
        if self.args.latent is not None and ".self_attn." in name:
            return self._latent_parts(name)
        if name.endswith(("qkv_proj.device_weight", "qkv_proj.bias")):
            return p.query_rows(), p.kv_rows(), p.kv_rows()
        if name.endswith("gate_up_proj.device_weight"):
            return p.intermediate_rows(), p.intermediate_rows()
        if name.endswith("o_proj.device_weight"):
            return (p.columns(p.query_rows()),)
        if name.endswith("down_proj.device_weight"):
            return (p.columns(p.intermediate_rows()),)
        if name.endswith("o_proj.bias"):
            return (p.once(self.args.hidden_size),)
        if name.endswith(("embed_tokens.device_weight", "lm_head.device_weight")):
            return (p.vocab_rows(),)
        return None

    def _expert_parts(self, name: str) -> tuple[Part, ...] | None:
        """Parts of a routed layer's tensors (an empty tuple: held whole); None for a dense layer's."""
        p, share = self.partition, self.partition.experts
        if name.endswith(("shared_expert.gate_up_proj.device_weight", "shared_expert.down_proj.device_weight")):
            rows = share.shared_rows()
            return (rows, rows) if "gate_up" in name else (p.columns(rows),)
        if name.endswith(EXPERT_WEIGHTS):
            rows = share.feature_rows()
            if rows is None:
                return ()
            return (rows, rows) if "gate_up" in name else (p.columns(rows),)
        if name.endswith(("mlp.gate.device_weight", "mlp.correction_bias", "shared_expert_gate.device_weight")):
            return ()
        return None

    def _latent_parts(self, name: str) -> tuple[Part, ...] | None:
        """Latent attention split by heads: the query's and kv_b's rows of this rank's heads, o's matching columns;
        the latent's projections and norms (every head reads the one latent) whole."""
        p, latent = self.partition, self.args.latent
        heads = p.local_heads

        def rows(per_head: int) -> Part:
            return Part(0, p.rank * heads * per_head, (p.rank + 1) * heads * per_head)

        if name.endswith(("q_proj.device_weight", "q_b_proj.device_weight")):
            return (rows(latent.nope + latent.rope),)
        if name.endswith("kv_b_proj.weight"):
            return (rows(latent.nope + latent.value),)
        if name.endswith("o_proj.device_weight"):
            return (p.columns(rows(latent.value)),)
        return None

    def checkpoint_experts(self, name: str) -> range | None:
        """The checkpoint's experts that stacked parameter `name` holds, in order; None: all of them."""
        share = self.partition.experts
        return None if share is None else share.experts()

    def hidden_states(self, input_ids: ms.Tensor, inputs: StepInputs) -> ms.Tensor:
        """The final norm's output [T, E] for every token: what an embedding model's pooler reads."""
        h, residual = self.model(input_ids, inputs)
        hidden, _ = self.model.norm(h, residual)
        return hidden

    def construct(self, input_ids: ms.Tensor, inputs: StepInputs, logits_index: ms.Tensor | None) -> ms.Tensor:
        """Logits [S, vocab] for the tokens at `logits_index` (the last token of each sampling request); None: for
        every token in order (a step of decodes), without gathers."""
        if self.group.world_size == 1 and self.args.experts is None and self.args.latent is None:  # one launch
            stack = self.model.decoder_stack()
            return self.ops.causal_lm(stack, self.ends(), input_ids, self.model.rotary, inputs, logits_index)
        h, residual = self.model(input_ids, inputs)
        if logits_index is not None:
            h, residual = h[logits_index], residual[logits_index]
        hidden, _ = self.model.norm(h, residual)
        ends = self.ends()
        logits = self.ops.linear(hidden, ends.head, None, ends.vocab, ends.int8_activations)
        return self.group.all_gather(logits)[:, : self.args.vocab_size]  # the last rank's padding dropped
