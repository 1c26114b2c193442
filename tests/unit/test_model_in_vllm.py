"""What vLLM itself does with the model object the runner holds, outside the model runner's calls."""

import weakref


def test_vllms_in_process_engine_cleanup_walks_the_models_cells(tiny_model_dirs) -> None:
    """With VLLM_ENABLE_V1_MULTIPROCESSING=0 the engine lives in the caller's process, and collecting it runs
    LLMEngine._cleanup_instance_caches on the driver model: it iterates `model.modules()` (torch's name)."""
    from vllm.v1.engine.llm_engine import LLMEngine

    from vms_plugin.models.registry import build_model

    model = build_model(tiny_model_dirs["LlamaForCausalLM"])
    LLMEngine._cleanup_instance_caches(weakref.ref(model))
    cells = list(model.modules())
    assert cells[0] is model
    assert model.model.layers[0].self_attn in cells and model.model.norm in cells
