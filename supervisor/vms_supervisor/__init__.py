"""The vms operator: prepares models, decides the engine command line and runs vLLM."""
