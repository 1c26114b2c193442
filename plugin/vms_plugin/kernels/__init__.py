"""Fused CPU kernels (C++, compiled on first use) exposed as MindSpore Custom operators."""
