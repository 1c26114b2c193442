"""Does the KV cache budget hold at least one sequence of the model's full length? Said in blocks, before vLLM
allocates anything, because a negative or too-small KV cache is the most common way a model "does not fit"."""

MIB = 1 << 20


def check_fits_one_sequence(kv_cache_bytes: int, bytes_per_block: int, block_size: int, max_model_len: int) -> int:
    """The number of blocks the budget holds; raises ValueError naming the numbers when one sequence does not fit."""
    available_blocks = max(kv_cache_bytes, 0) // bytes_per_block
    needed_blocks = -(-max_model_len // block_size)
    if available_blocks < needed_blocks:
        raise ValueError(
            f"the KV cache holds {available_blocks} blocks of {block_size} tokens "
            f"({kv_cache_bytes / MIB:.1f} MiB at {bytes_per_block / MIB:.3f} MiB per block), but one sequence of "
            f"max_model_len {max_model_len} needs {needed_blocks} blocks ({needed_blocks * bytes_per_block / MIB:.1f} "
            "MiB); raise --kv-cache-memory-bytes (or VLLM_CPU_KVCACHE_SPACE, in GiB) or lower --max-model-len"
        )
    return available_blocks
