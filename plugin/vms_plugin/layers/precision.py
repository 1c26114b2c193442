"""The storage type of a model's linear weights, embedding table and KV cache: vLLM's resolved `--dtype`.

Activations, norm weights and biases stay float32 whatever it is, and so does every accumulation: a 16-bit type
halves the bytes that decode streams per step, not the precision of the arithmetic.
"""

import mindspore as ms

STORAGE_DTYPES: dict[str, ms.Type] = {"float32": ms.float32, "float16": ms.float16, "bfloat16": ms.bfloat16}
# A linear layer's weight may also be int8, with per-channel scales (layers/int8.py); nothing else is.
LINEAR_DTYPES: dict[str, ms.Type] = {**STORAGE_DTYPES, "int8": ms.int8}


def storage_dtype(name: str) -> ms.Type:
    if name not in STORAGE_DTYPES:
        raise ValueError(f"vms_plugin stores weights as {', '.join(STORAGE_DTYPES)}; {name!r} is not one of them")
    return STORAGE_DTYPES[name]


def linear_dtype(name: str) -> ms.Type:
    if name not in LINEAR_DTYPES:
        raise ValueError(f"vms_plugin stores linear weights as {', '.join(LINEAR_DTYPES)}; {name!r} is not one of them")
    return LINEAR_DTYPES[name]


def dtype_name(dtype: ms.Type) -> str:
    for name, known in LINEAR_DTYPES.items():
        if known == dtype:
            return name
    raise ValueError(f"{dtype} is not a storage type; allowed: {', '.join(LINEAR_DTYPES)}")
