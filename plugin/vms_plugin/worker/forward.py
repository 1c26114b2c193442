"""One forward of a MindSpore causal LM over a step's batch, returning the logits of the rows asked for."""

import mindspore as ms
import numpy as np
from mindspore import Tensor

from vms_plugin.ops import layer_ops
from vms_plugin.worker.batch import StepBatch


def step_logits(model, batch: StepBatch, logits_index: np.ndarray) -> ms.Tensor:
    """Logits [len(logits_index), vocab] of `model` at those token rows of `batch`, writing the batch's KV."""
    inputs = layer_ops().attention_inputs(batch)
    if np.array_equal(logits_index, np.arange(len(batch.input_ids))):
        return model(Tensor(batch.input_ids), inputs, None)  # every token samples: decodes
    # A step without sampling still needs a valid index; its logits are discarded.
    logits_index = logits_index.astype(np.int32) if len(logits_index) else np.zeros(1, dtype=np.int32)
    return model(Tensor(batch.input_ids), inputs, Tensor(logits_index))
