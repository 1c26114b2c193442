"""The reference for vms's int8 models: transformers in float32 computing on the same int8 values.

Every decoder Linear weight is replaced by scale * q, quantized as vms quantizes it (layers/int8.py), and for W8A8
each Linear's input is rounded the way the W8A8 kernel rounds it: per token, to max |x| / 127 steps.
"""

import numpy as np


def int8_reference(model_dir, name: str):
    """transformers in float32 with the decoder's Linear weights on the int8 grid (and, for W8A8, their inputs)."""
    import torch
    from transformers import AutoModelForCausalLM

    from vms_plugin.layers.int8 import quantize_per_channel

    def quantize_per_token(module, inputs):
        (x,) = inputs
        scales = x.abs().amax(dim=-1, keepdim=True) / 127
        scales = torch.where(scales > 0, scales, torch.ones_like(scales))
        return (torch.clamp(torch.round(x / scales), -127, 127) * scales,)

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        for module_name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear) and ".layers." in module_name:
                quantized, scales = quantize_per_channel(module.weight.numpy())
                module.weight.copy_(torch.from_numpy(quantized.astype(np.float32) * scales[:, None]))
                if name == "W8A8":
                    module.register_forward_pre_hook(quantize_per_token)
    return model
