"""LoRA on Ascend (layers/lora.py's slots): each token's B[s] @ (A[s] @ x) as two matmuls for the whole step.

Every slot's shrink is one matmul, x [T, in] @ A^T [in, S * R]; a mask keeps each token's own slot's R columns
(none for the base model's tokens, slot -1), and one matmul with B [S * R, out] expands them: no loop over
requests or slots, as vllm-mindspore's punica-free path computes LoRA. The slots are copied to the device again
when an adapter fills one (LayerAdapters.version).
"""

import mindspore as ms
import numpy as np
from mindspore import Tensor, mint

from vms_plugin.layers.lora import LayerAdapters


def adapter_products(x: ms.Tensor, adapters: LayerAdapters, target: str, token_slots: ms.Tensor, prepared: dict):
    """x [T, in] -> [T, out]: what linear layer `target`'s adapters add for each token's slot in token_slots [T]."""
    a, b, slot_of_column = _device_slots(adapters, target, prepared)
    mask = (token_slots.unsqueeze(-1) == slot_of_column.unsqueeze(0)).astype(x.dtype)  # [T, S * R]
    return mint.matmul(mint.matmul(x, a.swapaxes(0, 1)) * mask, b)


def _device_slots(adapters: LayerAdapters, target: str, prepared: dict) -> tuple[ms.Tensor, ms.Tensor, ms.Tensor]:
    """(A [S * R, in], B [S * R, out], the slot of each of the S * R columns) on the device, copied again after a
    fill."""
    key = ("lora", target)
    if key not in prepared or prepared[key][0] != adapters.version:
        a, b = adapters.pairs[target]
        slots, rank, _ = a.shape
        stacked_b = np.ascontiguousarray(b.transpose(0, 2, 1).reshape(slots * rank, -1))
        slot_of_column = np.repeat(np.arange(slots, dtype=np.int32), rank)
        device = (Tensor(a.reshape(slots * rank, -1)), Tensor(stacked_b), Tensor(slot_of_column))
        prepared[key] = adapters.version, device
    return prepared[key][1]
