"""vms bench: vLLM with vms_plugin side by side with vLLM's own CPU backend and llama.cpp, on one workload."""
