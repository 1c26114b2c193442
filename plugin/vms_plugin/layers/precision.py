"""The storage type of a model's linear weights, embedding table and KV cache: vLLM's resolved `--dtype`.

Activations, norm weights and biases stay float32 whatever it is, and so does every accumulation: a 16-bit type
halves the bytes that decode streams per step, not the precision of the arithmetic.
"""

import mindspore as ms

STORAGE_DTYPES: dict[str, ms.Type] = {"float32": ms.float32, "float16": ms.float16, "bfloat16": ms.bfloat16}


def storage_dtype(name: str) -> ms.Type:
    if name not in STORAGE_DTYPES:
        raise ValueError(f"vms_plugin stores weights as {', '.join(STORAGE_DTYPES)}; {name!r} is not one of them")
    return STORAGE_DTYPES[name]


def dtype_name(dtype: ms.Type) -> str:
    for name, known in STORAGE_DTYPES.items():
        if known == dtype:
            return name
    raise ValueError(f"{dtype} is not a storage type; allowed: {', '.join(STORAGE_DTYPES)}")
