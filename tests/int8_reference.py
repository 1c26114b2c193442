"""The reference for vms's int8 models: transformers in float32 computing on the same int8 values.

Every decoder Linear weight is replaced by scale * q, quantized as vms quantizes it (layers/int8.py), and for W8A8
each Linear's input is rounded the way the W8A8 kernel rounds it: per token, to max |x| / 127 steps.
"""

import numpy as np

# W8A8's inputs are rounded to int8 steps: float32 sums ordered differently (vector widths differ between machines)
# can round an activation lying within float32 rounding of a half step the other way, which moves that token's and
# later tokens' logits by up to ~1.5% of the largest |logit| (tests/unit/test_model_int8.py): the bound allowed.
FLIPPED_ROUNDING_TOLERANCE = 0.03


def int8_reference(model_dir, name: str, bfloat16_matmuls: bool = False, lm_head: bool = False):
    """transformers in float32 with the decoder's Linear weights on the int8 grid (and, for W8A8, their inputs).

    `lm_head`: the output projection too, one scale per vocabulary row (a tied embedding is the same table), and
    for W8A8 its input.

    `bfloat16_matmuls`: each decoder Linear takes its input rounded to bfloat16 (before W8A8's quantization) and
    gives its product rounded to bfloat16, bias added after, and W8A16 scales its channels by bfloat16 scales, as
    Ascend's quantized matmuls do (ops/ascend.py).

    A mixture of experts' expert weights (3D tensors in transformers, not Linear modules) are put on the int8 grid
    too, and for W8A8 their inputs, on float32 matmuls only; the router and a shared expert's gate stay in float,
    as in vms."""
    import torch
    from transformers import AutoModelForCausalLM

    from vms_plugin.layers.int8 import quantize_per_channel

    def round_input(module, inputs):
        (x,) = inputs
        return (x.to(torch.bfloat16).to(torch.float32),)

    def round_product(module, inputs, output):
        bias = 0 if module.bias is None else module.bias
        return (output - bias).to(torch.bfloat16).to(torch.float32) + bias

    def on_token_grid(x):
        scales = x.abs().amax(dim=-1, keepdim=True) / 127
        scales = torch.where(scales > 0, scales, torch.ones_like(scales))
        return torch.clamp(torch.round(x / scales), -127, 127) * scales

    def quantize_per_token(module, inputs):
        (x,) = inputs
        return (on_token_grid(x),)

    def on_int8_grid(module, bfloat16_scales: bool) -> None:
        quantized, scales = quantize_per_channel(module.weight.numpy())
        if bfloat16_scales:
            scales = torch.from_numpy(scales).to(torch.bfloat16).to(torch.float32).numpy()
        module.weight.copy_(torch.from_numpy(quantized.astype(np.float32) * scales[:, None]))

    def experts_on_int8_grid(experts) -> None:
        """transformers keeps a layer's experts as 3D tensors [X, out, in]: each expert's rows quantized alike."""
        for weights in (experts.gate_up_proj, experts.down_proj):
            for expert in weights:
                quantized, scales = quantize_per_channel(expert.numpy())
                expert.copy_(torch.from_numpy(quantized.astype(np.float32) * scales[:, None]))

    def experts_with_int8_inputs(experts) -> None:
        """W8A8: each expert's inputs (a token's row, then its SwiGLU activation) on the per-token grid, the loop
        otherwise transformers' own (each expert on its tokens, results added in expert order)."""
        linear = torch.nn.functional.linear

        def forward(hidden_states, top_k_index, top_k_weights):
            out = torch.zeros_like(hidden_states)
            for expert in range(experts.num_experts):
                tokens, choice = torch.where(top_k_index == expert)
                gate, up = linear(on_token_grid(hidden_states[tokens]), experts.gate_up_proj[expert]).chunk(2, dim=-1)
                down = linear(on_token_grid(experts.act_fn(gate) * up), experts.down_proj[expert])
                out.index_add_(0, tokens, down * top_k_weights[tokens, choice, None])
            return out

        experts.forward = forward

    def computed_as_vms_does(module) -> None:
        on_int8_grid(module, bfloat16_matmuls and name == "W8A16")
        if bfloat16_matmuls:
            module.register_forward_pre_hook(round_input)
            module.register_forward_hook(round_product)
        if name == "W8A8":
            module.register_forward_pre_hook(quantize_per_token)

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        for module_name, module in model.named_modules():
            if module_name.endswith("shared_expert_gate"):
                continue  # one output per token, kept in float like the router
            if isinstance(module, torch.nn.Linear) and ".layers." in module_name:
                computed_as_vms_does(module)
            elif module_name.endswith(".experts") and not bfloat16_matmuls:
                experts_on_int8_grid(module)
                if name == "W8A8":
                    experts_with_int8_inputs(module)
        if lm_head:
            output = model.get_output_embeddings()
            output.weight = torch.nn.Parameter(output.weight.clone())  # untied: Ascend's scales may differ
            on_int8_grid(model.get_input_embeddings(), bfloat16_scales=False)
            computed_as_vms_does(output)
    return model
