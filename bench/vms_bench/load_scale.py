"""Loading at the scale of real mixture-of-experts checkpoints: `python -m vms_bench.load_scale`.

A Qwen3-30B-A3B has 48 layers of 128 experts, 18,432 expert tensors of the checkpoint's ~18,900. This writes a
random Qwen3-MoE with that many layers and experts (and so that many tensors) but narrower, sized to fit this
host, in bfloat16, one safetensors shard per layer, as real checkpoints are sharded; then vms loads it into its
MindSpore model (`build_model`, bfloat16) in a fresh process and the time and peak resident memory are reported.
The writer never holds more than one layer: neither transformers nor a whole model in memory.
"""

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from tqdm import tqdm

# Qwen3-30B-A3B's depth, experts and top k; width cut to fit a host of ~20 GB.
SHAPE = dict(
    num_hidden_layers=48,
    num_experts=128,
    num_experts_per_tok=8,
    hidden_size=512,
    moe_intermediate_size=192,
    intermediate_size=1536,
    num_attention_heads=8,
    num_key_value_heads=4,
    head_dim=64,
    vocab_size=151936,
)


def config(shape: dict) -> dict:
    return {
        "architectures": ["Qwen3MoeForCausalLM"],
        "model_type": "qwen3_moe",
        "norm_topk_prob": True,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "max_position_embeddings": 4096,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        **shape,
    }


def layer_tensors(layer: int, shape: dict, generator) -> dict:
    """One decoder layer's tensors under Qwen3-MoE's checkpoint names, random bfloat16."""
    import torch

    e, h, i = shape["hidden_size"], shape["num_attention_heads"], shape["moe_intermediate_size"]
    k, d = shape["num_key_value_heads"], shape["head_dim"]
    prefix = f"model.layers.{layer}"

    def random(*size: int):
        return (torch.randn(*size, generator=generator) * 0.02).to(torch.bfloat16)

    tensors = {
        f"{prefix}.input_layernorm.weight": torch.ones(e, dtype=torch.bfloat16),
        f"{prefix}.post_attention_layernorm.weight": torch.ones(e, dtype=torch.bfloat16),
        f"{prefix}.self_attn.q_proj.weight": random(h * d, e),
        f"{prefix}.self_attn.k_proj.weight": random(k * d, e),
        f"{prefix}.self_attn.v_proj.weight": random(k * d, e),
        f"{prefix}.self_attn.o_proj.weight": random(e, h * d),
        f"{prefix}.self_attn.q_norm.weight": torch.ones(d, dtype=torch.bfloat16),
        f"{prefix}.self_attn.k_norm.weight": torch.ones(d, dtype=torch.bfloat16),
        f"{prefix}.mlp.gate.weight": random(shape["num_experts"], e),
    }
    for expert in range(shape["num_experts"]):
        name = f"{prefix}.mlp.experts.{expert}"
        tensors |= {f"{name}.gate_proj.weight": random(i, e), f"{name}.up_proj.weight": random(i, e)}
        tensors[f"{name}.down_proj.weight"] = random(e, i)
    return tensors


def write_checkpoint(target: Path, shape: dict) -> dict:
    """The checkpoint in `target` (made once); returns its tensor count and bytes."""
    import torch
    from safetensors.torch import save_file

    index_path = target / "model.safetensors.index.json"
    if index_path.is_file():
        index = json.loads(index_path.read_text())
        return {"tensors": len(index["weight_map"]), "bytes": index["metadata"]["total_size"]}
    target.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    layers = shape["num_hidden_layers"]
    weight_map, total = {}, 0
    shards = [f"model-{n + 1:05d}-of-{layers + 1:05d}.safetensors" for n in range(layers + 1)]
    for layer in tqdm(range(layers), desc="writing the random checkpoint", unit="layer"):
        tensors = layer_tensors(layer, shape, generator)
        save_file(tensors, target / shards[layer], metadata={"format": "pt"})
        weight_map |= {name: shards[layer] for name in tensors}
        total += sum(t.numel() * t.element_size() for t in tensors.values())
    e, vocab = shape["hidden_size"], shape["vocab_size"]
    ends = {
        "model.embed_tokens.weight": (torch.randn(vocab, e, generator=generator) * 0.02).to(torch.bfloat16),
        "lm_head.weight": (torch.randn(vocab, e, generator=generator) * 0.02).to(torch.bfloat16),
        "model.norm.weight": torch.ones(e, dtype=torch.bfloat16),
    }
    save_file(ends, target / shards[-1], metadata={"format": "pt"})
    weight_map |= {name: shards[-1] for name in ends}
    total += sum(t.numel() * t.element_size() for t in ends.values())
    (target / "config.json").write_text(json.dumps(config(shape), indent=2))
    index_path.write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    return {"tensors": len(weight_map), "bytes": total}


def load_once(model_dir: Path) -> dict:
    """Run in a fresh process: vms loads the checkpoint; seconds and peak resident memory."""
    started = time.perf_counter()
    from vms_plugin.models.registry import build_model

    imported = time.perf_counter()
    model = build_model(model_dir, "bfloat16")
    loaded = time.perf_counter()
    parameters = sum(param.nbytes for _, param in model.parameters_and_names())
    return {
        "import_s": round(imported - started, 1),
        "load_s": round(loaded - imported, 1),
        "parameter_bytes": parameters,
        # The peak counts the checkpoint's pages while they are mapped (file-backed, reclaimable); once loaded the
        # files are unmapped and what stays is the process's own memory.
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "rss_after_load_bytes": _status_bytes("VmRSS"),
        "anonymous_after_load_bytes": _status_bytes("RssAnon"),
    }


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vms_bench.load_scale", description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path.home() / ".cache" / "vms" / "random-Qwen3-MoE-48x128")
    parser.add_argument("--load-in-this-process", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.load_in_this_process:
        print(json.dumps(load_once(args.dir)))
        return 0
    checkpoint = write_checkpoint(args.dir, SHAPE)
    command = [sys.executable, "-m", "vms_bench.load_scale", "--dir", str(args.dir), "--load-in-this-process"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        print(result.stderr[-4000:], file=sys.stderr)
        return result.returncode
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    print(json.dumps({"checkpoint": str(args.dir), "shape": SHAPE, **checkpoint, **measured}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
