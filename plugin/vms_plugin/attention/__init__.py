"""Attention over vLLM's paged KV cache, held in MindSpore tensors."""
