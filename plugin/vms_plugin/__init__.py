"""vLLM platform plugin that runs models written in MindSpore.

Only `register()` lives here: vLLM calls it for every process it starts, so importing the package stays cheap.
"""

import os

DISABLE_ENV = "VMS_DISABLE"
START_METHOD_VARIABLE = "VLLM_WORKER_MULTIPROC_METHOD"  # how vLLM starts its engine core and worker processes


def register() -> str | None:
    """Entry point of group `vllm.platform_plugins`: the platform's dotted path, or None to give plain vLLM back."""
    if os.environ.get(DISABLE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}:
        return None
    return "vms_plugin.platform.MindSporePlatform"
