"""DeepSeek-V3's and GLM-4.5's expert routing on Ascend, from MindSpore's basic ops (`mint`): sigmoid or softmax
scores, the correction bias for choosing only, group-limited choice, normalisation and the scaling factor, as
ops/interface.py's Routing says and cpu_kernels.cc's RouteTokens computes.

Plain softmax top-k, the Qwen and Mixtral routing, stays on the fused MoeGatingTopKSoftmax (ops/ascend.py). The ops
here are MindSpore's own (sigmoid, top-k, gather, masked fill) and run on any device, so the tests run them for
real: `ops.topk` rather than `mint.topk`, whose kernel MindSpore 2.10 registers for the NPU only.
"""

import mindspore as ms
from mindspore import mint, ops

from vms_plugin.ops.interface import Routing


def route(logits: ms.Tensor, routing: Routing, bias: ms.Tensor | None) -> tuple[ms.Tensor, ms.Tensor]:
    """Router logits [T, X] (float32) -> (weights [T, k] float32, chosen experts [T, k] int32)."""
    scores = mint.sigmoid(logits) if routing.sigmoid else mint.softmax(logits, dim=-1)
    choice = scores if bias is None else scores + bias
    if routing.groups > 1:
        tokens, experts = choice.shape
        grouped = choice.reshape(tokens, routing.groups, experts // routing.groups)
        best = ops.topk(grouped, 2 if routing.group_by_top_two else 1, dim=-1)[0]
        kept = ops.topk(best.sum(-1), routing.top_groups, dim=-1)[1].astype(ms.int64)
        open_groups = mint.zeros((tokens, routing.groups), dtype=ms.float32).scatter(1, kept, 1.0)
        open_experts = open_groups.unsqueeze(-1).broadcast_to(grouped.shape).reshape(tokens, experts)
        choice = choice.masked_fill(open_experts == 0, float("-inf"))
    chosen = ops.topk(choice, routing.top_k, dim=-1)[1].astype(ms.int64)
    weights = mint.gather(scores, 1, chosen)
    if routing.normalize:
        weights = weights / (weights.sum(-1, keepdims=True) + 1e-20)
    return weights * routing.scaling, chosen.astype(ms.int32)
