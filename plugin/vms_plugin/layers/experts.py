"""A mixture-of-experts MLP's parameters: the router and every expert's SwiGLU weights, stacked per layer.

Each expert's weight is laid out for the device exactly as a dense linear weight is (layers/linear.py), and the X
experts' are stacked on a new first axis, so that one parameter (one launch input) holds all of a layer's experts.
The checkpoint keeps one tensor per expert; the loader fills the stack one expert at a time (models/weights.py).
"""

from dataclasses import dataclass
from typing import Any

import mindspore as ms
from mindspore import Parameter, nn
from mindspore.common.initializer import initializer

from vms_plugin.layers.linear import Linear
from vms_plugin.layers.parallel import Part
from vms_plugin.layers.precision import linear_dtype
from vms_plugin.ops import layer_ops
from vms_plugin.ops.interface import ExpertWeights, Routing

EXPERT_WEIGHTS = "expert_weights"  # parameter name: X checkpoint weights, one per expert, laid out and stacked
EXPERT = "{expert}"  # where a checkpoint name of an expert's weight holds the expert's index


@dataclass(frozen=True)
class ExpertArgs:
    num_experts: int  # X
    routing: Routing
    intermediate_size: int  # I of each expert
    sparse_layers: frozenset[int]  # the layers whose MLP is routed experts; the others are dense
    shared_intermediate_size: int = 0  # a shared expert's I (Qwen2-MoE, DeepSeek), 0: none
    shared_gate: bool = False  # the shared expert's output scaled by sigmoid(shared_expert_gate(x)) (Qwen2-MoE)
    correction_bias: bool = False  # DeepSeek-V3's e_score_correction_bias (topk_method noaux_tc)

    @staticmethod
    def experts_count(config: dict[str, Any]) -> int:
        # Qwen's checkpoints say num_experts, DeepSeek's n_routed_experts; transformers 5 saves either as
        # num_local_experts, Mixtral's name.
        for key in ("num_experts", "n_routed_experts", "num_local_experts"):
            if config.get(key) is not None:
                return config[key]
        raise ValueError("a mixture-of-experts config needs num_experts, n_routed_experts or num_local_experts")

    @classmethod
    def qwen(cls, config: dict[str, Any], num_layers: int) -> "ExpertArgs":
        """Qwen2-MoE / Qwen3-MoE: routed layers by `mlp_only_layers` and `decoder_sparse_step`, `norm_topk_prob`;
        Qwen2-MoE's gated shared expert by `shared_expert_intermediate_size`."""
        experts = cls.experts_count(config)
        dense, step = set(config.get("mlp_only_layers") or ()), config.get("decoder_sparse_step", 1)
        sparse = {i for i in range(num_layers) if i not in dense and experts > 0 and (i + 1) % step == 0}
        shared = config.get("shared_expert_intermediate_size", 0)
        return cls(
            num_experts=experts,
            routing=Routing(config["num_experts_per_tok"], normalize=config.get("norm_topk_prob", False)),
            intermediate_size=config["moe_intermediate_size"],
            sparse_layers=frozenset(sparse),
            shared_intermediate_size=shared,
            shared_gate=shared > 0,
        )

    @classmethod
    def mixtral(cls, config: dict[str, Any], num_layers: int) -> "ExpertArgs":
        """Mixtral: every layer routed, the top k's weights always normalised, `intermediate_size` each expert's."""
        return cls(
            num_experts=cls.experts_count(config),
            routing=Routing(config["num_experts_per_tok"], normalize=True),
            intermediate_size=config["intermediate_size"],
            sparse_layers=frozenset(range(num_layers)),
        )

    @classmethod
    def deepseek(cls, config: dict[str, Any], num_layers: int) -> "ExpertArgs":
        """DeepSeek-V2/V3: layers from `first_k_dense_replace` on routed (every `moe_layer_freq`-th), by `topk_method`:
        greedy (softmax top k), group_limited_greedy (softmax, groups worth their best score) or noaux_tc (sigmoid
        plus the correction bias for choosing, groups worth their two best); `n_shared_experts` ungated shared
        experts as one MLP; the weights times `routed_scaling_factor`."""
        method = config.get("topk_method") or "greedy"
        if method not in DEEPSEEK_TOPK_METHODS:
            raise ValueError(f"topk_method '{method}' is not supported; supported: {', '.join(DEEPSEEK_TOPK_METHODS)}")
        scoring = config.get("scoring_func") or ("sigmoid" if method == "noaux_tc" else "softmax")
        if scoring not in ("softmax", "sigmoid"):
            raise ValueError(f"scoring_func '{scoring}' is not supported; supported: softmax, sigmoid")
        grouped = method != "greedy"
        first, frequency = config.get("first_k_dense_replace", 0), config.get("moe_layer_freq", 1)
        sparse = {i for i in range(first, num_layers) if i % frequency == 0}
        routing = Routing(
            config["num_experts_per_tok"],
            # DeepSeek-V2's router never normalises; V3's config says (its reference divides by the sum + 1e-20).
            normalize=method == "noaux_tc" and config.get("norm_topk_prob", False),
            sigmoid=scoring == "sigmoid",
            groups=(config.get("n_group") or 1) if grouped else 1,
            top_groups=(config.get("topk_group") or 1) if grouped else 1,
            group_by_top_two=method == "noaux_tc",
            scaling=float(config.get("routed_scaling_factor", 1.0)),
        )
        return cls(
            num_experts=cls.experts_count(config),
            routing=routing,
            intermediate_size=config["moe_intermediate_size"],
            sparse_layers=frozenset(sparse),
            shared_intermediate_size=config["moe_intermediate_size"] * (config.get("n_shared_experts") or 0),
            correction_bias=method == "noaux_tc",
        )

    @classmethod
    def glm(cls, config: dict[str, Any], num_layers: int) -> "ExpertArgs":
        """GLM-4.5 (Glm4Moe): DeepSeek-V3's routing (sigmoid, correction bias, groups), its configs saying no
        topk_method."""
        return cls.deepseek({**config, "topk_method": "noaux_tc", "scoring_func": "sigmoid"}, num_layers)


DEEPSEEK_TOPK_METHODS = ("greedy", "group_limited_greedy", "noaux_tc")


@dataclass(frozen=True)
class ExpertShare:
    """A tensor-parallel rank's share of each routed layer's experts. With expert parallelism (vLLM's
    --enable-expert-parallel) the ranks split the experts, X/N whole ones each; without, every rank holds every
    expert with I/N of its features, as a dense MLP is split. A shared expert is split by its features either way.
    Either way each rank's output is a partial sum, which the ranks all-reduce."""

    rank: int
    world_size: int
    expert_parallel: bool
    args: ExpertArgs

    def __post_init__(self) -> None:
        n, args = self.world_size, self.args
        if self.expert_parallel and args.num_experts % n:
            raise ValueError(
                f"--enable-expert-parallel over {n} ranks needs the expert count ({args.num_experts}) to divide "
                f"evenly; choose a --tensor-parallel-size that divides {args.num_experts}"
            )
        if not self.expert_parallel and args.intermediate_size % n:
            raise ValueError(
                f"--tensor-parallel-size {n} does not divide each expert's {args.intermediate_size} features; "
                "choose one that does, or split the experts with --enable-expert-parallel"
            )
        if args.shared_intermediate_size % n:
            raise ValueError(
                f"--tensor-parallel-size {n} does not divide the shared expert's {args.shared_intermediate_size} "
                "features; choose one that does"
            )

    @classmethod
    def whole(cls, args: ExpertArgs) -> "ExpertShare":
        return cls(0, 1, False, args)

    @property
    def count(self) -> int:
        """Experts this rank holds."""
        return self.args.num_experts // self.world_size if self.expert_parallel else self.args.num_experts

    @property
    def first(self) -> int:
        return self.rank * self.count if self.expert_parallel else 0

    @property
    def intermediate(self) -> int:
        """Features of each held expert."""
        size = self.args.intermediate_size
        return size if self.expert_parallel else size // self.world_size

    @property
    def shared_intermediate(self) -> int:
        return self.args.shared_intermediate_size // self.world_size

    def experts(self) -> range:
        """The checkpoint's experts this rank holds, in its stacked order."""
        return range(self.first, self.first + self.count)

    def feature_rows(self) -> Part | None:
        """Rows of each held expert's gate and up weights (columns of its down weight); None: all of them."""
        size = self.intermediate
        return None if size == self.args.intermediate_size else Part(0, self.rank * size, (self.rank + 1) * size)

    def shared_rows(self) -> Part:
        size = self.shared_intermediate
        return Part(0, self.rank * size, (self.rank + 1) * size)


def expert_weights(num_experts: int, in_features: int, out_features: int, dtype: str) -> Parameter:
    """X unfilled [out, in] weights in the device's layout, stacked."""
    shape = (num_experts, *layer_ops().linear_weight_shape(in_features, out_features, dtype))
    return Parameter(initializer("zeros", shape, linear_dtype(dtype)), name=EXPERT_WEIGHTS)


class StackedExpertWeight(nn.Cell):
    """One stacked weight of a layer's experts, under the name its checkpoint tensors share (gate_up_proj,
    down_proj)."""

    def __init__(self, num_experts: int, in_features: int, out_features: int, dtype: str) -> None:
        super().__init__()
        self.expert_weights = expert_weights(num_experts, in_features, out_features, dtype)


class SharedExpert(nn.Cell):
    """A shared expert (Qwen2-MoE's, DeepSeek's): a SwiGLU MLP every token runs (gate and up stacked, as a dense
    layer's)."""

    def __init__(self, hidden_size: int, intermediate_size: int, dtype: str) -> None:
        super().__init__()
        self.gate_up_proj = Linear(hidden_size, 2 * intermediate_size, dtype=dtype)
        self.down_proj = Linear(intermediate_size, hidden_size, dtype=dtype)


class RoutedExperts(nn.Cell):
    """The router (`gate`, kept in the model's 16- or 32-bit type even when the experts are int8: it decides
    discrete choices) with any correction bias (float32), the experts and any shared expert with its gate (float
    like the router); the device's ops compute with them."""

    def __init__(
        self, hidden_size: int, share: ExpertShare, dtype: str, router_dtype: str, int8_activations: bool
    ) -> None:
        super().__init__()
        args = share.args
        self.gate = Linear(hidden_size, args.num_experts, dtype=router_dtype)
        self.gate_up_proj = StackedExpertWeight(share.count, hidden_size, 2 * share.intermediate, dtype)
        self.down_proj = StackedExpertWeight(share.count, share.intermediate, hidden_size, dtype)
        shared = share.shared_intermediate
        self.shared_expert = SharedExpert(hidden_size, shared, dtype) if shared else None
        self.shared_expert_gate = Linear(hidden_size, 1, dtype=router_dtype) if args.shared_gate else None
        bias = Parameter(initializer("zeros", (args.num_experts,), ms.float32), name="correction_bias")
        self.correction_bias = bias if args.correction_bias else None
        self.share, self.args, self.int8_activations = share, args, int8_activations
        self.prepared: dict = {}  # the device's values derived from the weights (ExpertWeights.prepared)
        self.ops = layer_ops()

    def weights(self) -> ExpertWeights:
        """The weights as the device's ops take them; made per call (a NamedTuple of Parameters kept on a Cell
        becomes a parameter tuple of its own)."""
        args, share, shared, shared_gate = self.args, self.share, self.shared_expert, self.shared_expert_gate
        return ExpertWeights(
            router=self.gate.device_weight,
            gate_up=self.gate_up_proj.expert_weights,
            down=self.down_proj.expert_weights,
            num_experts=args.num_experts,
            first_expert=share.first,
            routing=args.routing,
            correction_bias=self.correction_bias,
            intermediate_size=share.intermediate,
            int8_activations=self.int8_activations,
            shared_gate_up=None if shared is None else shared.gate_up_proj.device_weight,
            shared_down=None if shared is None else shared.down_proj.device_weight,
            shared_gate=None if shared_gate is None else shared_gate.device_weight,
            shared_intermediate_size=share.shared_intermediate,
            prepared=self.prepared,
        )

    def construct(self, x: ms.Tensor) -> ms.Tensor:
        return self.ops.routed_experts(x, self.weights())
