"""Model architectures written in MindSpore, one file each."""
